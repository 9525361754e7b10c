//! `calculator`: an arithmetic expression evaluator.
//!
//! A small recursive-descent parser over `f64` (so `7/2` is `3.5`, not `3`). Grammar, loosest
//! binding first:
//!
//! ```text
//! expr    = term (("+" | "-") term)*
//! term    = unary (("*" | "/" | "%") unary)*
//! unary   = ("-" | "+") unary | power
//! power   = primary (("^" | "**") unary)?        right-associative; -2^2 = -4, 2^-1 = 0.5
//! primary = number | constant | name "(" expr ("," expr)* ")" | "(" expr ")"
//! ```
//!
//! Hostile input is bounded: at most [`MAX_EXPRESSION_CHARS`] characters and
//! [`MAX_DEPTH`] nested levels (parentheses, function calls, signs, exponents), so evaluation
//! cannot exhaust the stack. Positions in errors count characters from 1.

use pocket_agent::{Tool, ToolContext, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Number;

/// Longest expression accepted, in characters.
pub const MAX_EXPRESSION_CHARS: usize = 4096;
/// Deepest nesting accepted (parentheses, function calls, unary signs, exponents).
pub const MAX_DEPTH: usize = 64;

const FUNCTIONS: &str =
    "sqrt, abs, ln, log10, log2, exp, sin, cos, tan, floor, ceil, round, min, max";

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CalcError {
    /// The expression is not well formed.
    #[error("{message} at position {position}")]
    Syntax {
        /// What is wrong.
        message: String,
        /// Where, counting characters from 1.
        position: usize,
    },
    /// The expression is well formed but has no finite value (division by zero, `sqrt(-1)`,
    /// overflow).
    #[error("{message} at position {position}")]
    Math {
        /// What is wrong.
        message: String,
        /// The operator or function, counting characters from 1.
        position: usize,
    },
    /// The expression is longer than [`MAX_EXPRESSION_CHARS`].
    #[error("expression is {len} characters long; the limit is {limit}")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The expression nests deeper than [`MAX_DEPTH`].
    #[error("expression nests deeper than {limit} levels at position {position}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was passed, counting characters from 1.
        position: usize,
    },
}

impl CalcError {
    /// Where the error is, counting characters from 1; `None` for [`CalcError::TooLong`].
    pub fn position(&self) -> Option<usize> {
        match self {
            Self::Syntax { position, .. }
            | Self::Math { position, .. }
            | Self::TooDeep { position, .. } => Some(*position),
            Self::TooLong { .. } => None,
        }
    }

    fn syntax(message: impl Into<String>, position: usize) -> Self {
        Self::Syntax {
            message: message.into(),
            position,
        }
    }

    fn math(message: impl Into<String>, position: usize) -> Self {
        Self::Math {
            message: message.into(),
            position,
        }
    }
}

/// Evaluates an arithmetic expression.
///
/// ```
/// use pocket_tools::calculator::evaluate;
///
/// assert_eq!(evaluate("17 * 23").unwrap(), 391.0);
/// assert_eq!(evaluate("7 / 2").unwrap(), 3.5);
/// assert_eq!(evaluate("2 ^ 3 ^ 2").unwrap(), 512.0);
/// assert_eq!(
///     evaluate("(1 + 2))").unwrap_err().to_string(),
///     "unexpected `)` at position 8"
/// );
/// ```
///
/// # Errors
/// A [`CalcError`] naming the position of the problem.
pub fn evaluate(expression: &str) -> Result<f64, CalcError> {
    let len = expression.chars().count();
    if len > MAX_EXPRESSION_CHARS {
        return Err(CalcError::TooLong {
            len,
            limit: MAX_EXPRESSION_CHARS,
        });
    }
    let tokens = lex(expression)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        depth: 0,
    };
    if parser.peek().kind == Kind::End {
        return Err(CalcError::syntax("empty expression", 1));
    }
    let value = parser.expr()?;
    let rest = parser.peek();
    if rest.kind != Kind::End {
        return Err(CalcError::syntax(
            format!("unexpected {}", rest.describe()),
            rest.pos,
        ));
    }
    Ok(value)
}

/// A finite `f64` as a JSON number: integral values that fit `i64` become integers (`391`,
/// not `391.0`). `None` for NaN and infinities, which JSON cannot hold.
pub fn to_json_number(value: f64) -> Option<Number> {
    // 2^63: every integral f64 in [-2^63, 2^63) converts to i64 exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if value.is_finite() && value.fract() == 0.0 && (-LIMIT..LIMIT).contains(&value) {
        // Exact: integral and in range, checked above.
        return Some(Number::from(value as i64));
    }
    Number::from_f64(value)
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Num(f64),
    Name(String),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// The source text, for messages.
    text: String,
    /// 1-based character position.
    pos: usize,
}

impl Token {
    fn describe(&self) -> String {
        match self.kind {
            Kind::End => "end of expression".into(),
            Kind::Num(_) => format!("number `{}`", self.text),
            Kind::Name(_) => format!("name `{}`", self.text),
            _ => format!("`{}`", self.text),
        }
    }
}

fn lex(input: &str) -> Result<Vec<Token>, CalcError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let digit_at = |j: usize| chars.get(j).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || (c == '.' && digit_at(i + 1)) {
            let start = i;
            while digit_at(i) {
                i += 1;
            }
            if chars.get(i) == Some(&'.') {
                i += 1;
                while digit_at(i) {
                    i += 1;
                }
            }
            // An exponent only when digits follow, so `2e` stays `2` then the constant `e`.
            if matches!(chars.get(i), Some('e' | 'E')) {
                let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
                if digit_at(i + 1 + sign) {
                    i += 1 + sign;
                    while digit_at(i) {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            let value: f64 = text
                .parse()
                .map_err(|_| CalcError::syntax(format!("malformed number `{text}`"), pos))?;
            if !value.is_finite() {
                return Err(CalcError::syntax(
                    format!("number `{text}` is too large"),
                    pos,
                ));
            }
            tokens.push(Token {
                kind: Kind::Num(value),
                text,
                pos,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            tokens.push(Token {
                kind: Kind::Name(text.to_ascii_lowercase()),
                text,
                pos,
            });
            continue;
        }
        let (kind, width) = match c {
            '+' => (Kind::Plus, 1),
            '-' | '−' => (Kind::Minus, 1),
            '*' if chars.get(i + 1) == Some(&'*') => (Kind::Caret, 2),
            '*' | '×' => (Kind::Star, 1),
            '/' | '÷' => (Kind::Slash, 1),
            '%' => (Kind::Percent, 1),
            '^' => (Kind::Caret, 1),
            '(' => (Kind::LParen, 1),
            ')' => (Kind::RParen, 1),
            ',' => (Kind::Comma, 1),
            other => {
                return Err(CalcError::syntax(
                    format!("unexpected character `{other}`"),
                    pos,
                ));
            }
        };
        tokens.push(Token {
            kind,
            text: chars[i..i + width].iter().collect(),
            pos,
        });
        i += width;
    }
    tokens.push(Token {
        kind: Kind::End,
        text: String::new(),
        pos: chars.len() + 1,
    });
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends with `End`, and `advance` never moves past it.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::End {
            self.next += 1;
        }
        token
    }

    /// Runs `f` one nesting level deeper, refusing to pass [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        pos: usize,
        f: impl FnOnce(&mut Self) -> Result<T, CalcError>,
    ) -> Result<T, CalcError> {
        if self.depth >= MAX_DEPTH {
            return Err(CalcError::TooDeep {
                limit: MAX_DEPTH,
                position: pos,
            });
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut acc = self.term()?;
        loop {
            let op = self.peek().clone();
            let value = match op.kind {
                Kind::Plus => {
                    self.advance();
                    acc + self.term()?
                }
                Kind::Minus => {
                    self.advance();
                    acc - self.term()?
                }
                _ => return Ok(acc),
            };
            acc = finite(value, &op)?;
        }
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut acc = self.unary()?;
        loop {
            let op = self.peek().clone();
            let value = match op.kind {
                Kind::Star => {
                    self.advance();
                    acc * self.unary()?
                }
                Kind::Slash | Kind::Percent => {
                    self.advance();
                    let rhs = self.unary()?;
                    if rhs == 0.0 {
                        return Err(CalcError::math(
                            format!("division by zero (`{}` by 0)", op.text),
                            op.pos,
                        ));
                    }
                    if op.kind == Kind::Slash {
                        acc / rhs
                    } else {
                        acc % rhs
                    }
                }
                _ => return Ok(acc),
            };
            acc = finite(value, &op)?;
        }
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        let token = self.peek().clone();
        match token.kind {
            Kind::Minus => {
                self.advance();
                self.nested(token.pos, |p| p.unary().map(|v| -v))
            }
            Kind::Plus => {
                self.advance();
                self.nested(token.pos, Self::unary)
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.primary()?;
        let op = self.peek().clone();
        if op.kind != Kind::Caret {
            return Ok(base);
        }
        self.advance();
        let exponent = self.nested(op.pos, Self::unary)?;
        finite(base.powf(exponent), &op)
    }

    fn primary(&mut self) -> Result<f64, CalcError> {
        let token = self.advance();
        match &token.kind {
            Kind::Num(v) => Ok(*v),
            Kind::LParen => {
                let value = self.nested(token.pos, Self::expr)?;
                self.expect_close(&token)?;
                Ok(value)
            }
            Kind::Name(name) if self.peek().kind == Kind::LParen => {
                let open = self.advance();
                let mut args = vec![self.nested(open.pos, Self::expr)?];
                while self.peek().kind == Kind::Comma {
                    self.advance();
                    args.push(self.nested(open.pos, Self::expr)?);
                }
                self.expect_close(&open)?;
                call(name, &token, &args)
            }
            Kind::Name(name) => match name.as_str() {
                "pi" => Ok(std::f64::consts::PI),
                "e" => Ok(std::f64::consts::E),
                _ if function_arity(name).is_some() => Err(CalcError::syntax(
                    format!(
                        "function `{}` needs parentheses, e.g. `{}(2)`",
                        token.text, name
                    ),
                    token.pos,
                )),
                _ => Err(CalcError::syntax(
                    format!("unknown name `{}`; the constants are pi and e", token.text),
                    token.pos,
                )),
            },
            Kind::End => Err(CalcError::syntax("unexpected end of expression", token.pos)),
            _ => Err(CalcError::syntax(
                format!("unexpected {}", token.describe()),
                token.pos,
            )),
        }
    }

    fn expect_close(&mut self, open: &Token) -> Result<(), CalcError> {
        let next = self.peek().clone();
        if next.kind == Kind::RParen {
            self.advance();
            return Ok(());
        }
        Err(CalcError::syntax(
            format!(
                "expected `)` to close the `(` at position {}, found {}",
                open.pos,
                next.describe()
            ),
            next.pos,
        ))
    }
}

fn function_arity(name: &str) -> Option<usize> {
    match name {
        "sqrt" | "abs" | "ln" | "log10" | "log2" | "exp" | "sin" | "cos" | "tan" | "floor"
        | "ceil" | "round" => Some(1),
        "min" | "max" => Some(2),
        _ => None,
    }
}

fn call(name: &str, token: &Token, args: &[f64]) -> Result<f64, CalcError> {
    let Some(arity) = function_arity(name) else {
        return Err(CalcError::syntax(
            format!(
                "unknown function `{}`; the functions are {FUNCTIONS}",
                token.text
            ),
            token.pos,
        ));
    };
    if args.len() != arity {
        let plural = if arity == 1 { "" } else { "s" };
        return Err(CalcError::syntax(
            format!(
                "`{name}` takes {arity} argument{plural}, got {}",
                args.len()
            ),
            token.pos,
        ));
    }
    let x = args[0];
    let undefined = || {
        CalcError::math(
            format!("`{name}` is undefined for {}", fmt_number(x)),
            token.pos,
        )
    };
    let value = match name {
        "sqrt" if x < 0.0 => return Err(undefined()),
        "ln" | "log10" | "log2" if x <= 0.0 => return Err(undefined()),
        "sqrt" => x.sqrt(),
        "abs" => x.abs(),
        "ln" => x.ln(),
        "log10" => x.log10(),
        "log2" => x.log2(),
        "exp" => x.exp(),
        "sin" => x.sin(),
        "cos" => x.cos(),
        "tan" => x.tan(),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        "round" => x.round(),
        "min" => x.min(args[1]),
        "max" => x.max(args[1]),
        _ => return Err(undefined()),
    };
    finite(value, token)
}

/// `value` if finite, else an error naming the operator or function that produced it.
fn finite(value: f64, op: &Token) -> Result<f64, CalcError> {
    if value.is_finite() {
        Ok(value)
    } else if value.is_nan() {
        Err(CalcError::math(
            format!("`{}` has no real result here", op.text),
            op.pos,
        ))
    } else {
        Err(CalcError::math(
            format!("`{}` overflows (the result is too large)", op.text),
            op.pos,
        ))
    }
}

fn fmt_number(v: f64) -> String {
    to_json_number(v).map_or_else(|| v.to_string(), |n| n.to_string())
}

/// Arguments of [`Calculator`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalculatorArgs {
    /// The arithmetic expression, e.g. `17 * 23` or `sqrt(2) / 2`. Operators: + - * / %
    /// (remainder) ^ (power, right-associative), parentheses. Functions: sqrt, abs, ln, log10,
    /// log2, exp, sin, cos, tan (radians), floor, ceil, round, min(a, b), max(a, b).
    /// Constants: pi, e. Numbers may have decimals and exponents (1.5e3).
    pub expression: String,
}

/// The `calculator` tool: evaluates an arithmetic expression to a JSON number.
///
/// [`Risk::Safe`](pocket_agent::Risk::Safe) and idempotent. Malformed expressions are
/// [`ToolError::InvalidArguments`]; expressions without a finite value (division by zero,
/// `sqrt(-1)`) are a non-retryable [`ToolError::Failed`]. Both name the position.
#[derive(Debug, Clone, Default)]
pub struct Calculator {
    _private: (),
}

impl Calculator {
    /// The calculator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Tool for Calculator {
    type Args = CalculatorArgs;
    type Output = Number;

    fn name(&self) -> &str {
        "calculator"
    }

    fn description(&self) -> &str {
        "Evaluates an arithmetic expression exactly and returns the number. Use it for any \
         arithmetic instead of computing in your head. Supports + - * / % ^, parentheses, \
         sqrt, abs, ln, log10, log2, exp, sin, cos, tan (radians), floor, ceil, round, \
         min(a, b), max(a, b), pi and e."
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn call(&self, args: CalculatorArgs, _ctx: &ToolContext) -> Result<Number, ToolError> {
        match evaluate(&args.expression) {
            Ok(value) => to_json_number(value)
                .ok_or_else(|| ToolError::failed("the result is not a finite number")),
            Err(err @ CalcError::Math { .. }) => Err(ToolError::failed(err.to_string())),
            Err(err) => Err(ToolError::invalid_arguments(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eval(s: &str) -> f64 {
        match evaluate(s) {
            Ok(v) => v,
            Err(e) => panic!("`{s}` failed: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match evaluate(s) {
            Ok(v) => panic!("`{s}` evaluated to {v}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn basic_arithmetic_and_true_division() {
        assert_eq!(eval("17 * 23"), 391.0);
        assert_eq!(eval("7/2"), 3.5);
        assert_eq!(eval("1 + 2"), 3.0);
        assert_eq!(eval("10 - 4 - 3"), 3.0);
        assert_eq!(eval("7 % 3"), 1.0);
        assert_eq!(eval("-7 % 3"), -1.0);
        assert_eq!(eval("  42  "), 42.0);
    }

    #[test]
    fn precedence() {
        assert_eq!(eval("1 + 2 * 3"), 7.0);
        assert_eq!(eval("(1 + 2) * 3"), 9.0);
        assert_eq!(eval("2 * 3 ^ 2"), 18.0);
        assert_eq!(eval("10 - 2 * 3 + 1"), 5.0);
        assert_eq!(eval("8 / 4 / 2"), 1.0);
        assert_eq!(eval("1 + 10 % 4"), 3.0);
    }

    #[test]
    fn power_is_right_associative_and_binds_tighter_than_unary_minus() {
        assert_eq!(eval("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(eval("(2 ^ 3) ^ 2"), 64.0);
        assert_eq!(eval("-2 ^ 2"), -4.0);
        assert_eq!(eval("(-2) ^ 2"), 4.0);
        assert_eq!(eval("2 ^ -1"), 0.5);
        assert_eq!(eval("2 ** 10"), 1024.0);
    }

    #[test]
    fn unary_signs() {
        assert_eq!(eval("-3"), -3.0);
        assert_eq!(eval("--3"), 3.0);
        assert_eq!(eval("+3"), 3.0);
        assert_eq!(eval("4 - -3"), 7.0);
        assert_eq!(eval("-(2 + 3)"), -5.0);
    }

    #[test]
    fn numbers_with_decimals_and_exponents() {
        assert_eq!(eval("1e3"), 1000.0);
        assert_eq!(eval("1.5E-3"), 0.0015);
        assert_eq!(eval("2.5e+2"), 250.0);
        assert_eq!(eval(".5 + 1."), 1.5);
        // No implicit multiplication: `2e` is not `2 * e`, and not a malformed exponent.
        assert_eq!(err("2e"), "unexpected name `e` at position 2");
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(eval("sqrt(16)"), 4.0);
        assert_eq!(eval("abs(-2.5)"), 2.5);
        assert_eq!(eval("ln(e)"), 1.0);
        assert_eq!(eval("log10(1000)"), 3.0);
        assert_eq!(eval("log2(8)"), 3.0);
        assert_eq!(eval("exp(0)"), 1.0);
        assert_eq!(eval("sin(0)"), 0.0);
        assert_eq!(eval("cos(0)"), 1.0);
        assert_eq!(eval("tan(0)"), 0.0);
        assert_eq!(eval("floor(2.7)"), 2.0);
        assert_eq!(eval("ceil(2.1)"), 3.0);
        assert_eq!(eval("round(2.5)"), 3.0);
        assert_eq!(eval("min(3, -1)"), -1.0);
        assert_eq!(eval("max(3, -1)"), 3.0);
        assert_eq!(eval("pi"), std::f64::consts::PI);
        assert_eq!(eval("PI * 2"), std::f64::consts::TAU);
        assert_eq!(eval("max(sqrt(16), 2 ^ 3) + 1"), 9.0);
    }

    #[test]
    fn syntax_errors_name_the_position() {
        assert_eq!(err("(1 + 2))"), "unexpected `)` at position 8");
        assert_eq!(err("1 + 2 +) 3"), "unexpected `)` at position 8");
        assert_eq!(err("1 + * 2"), "unexpected `*` at position 5");
        assert_eq!(err("1 +"), "unexpected end of expression at position 4");
        assert_eq!(
            err("(1 + 2"),
            "expected `)` to close the `(` at position 1, found end of expression at position 7"
        );
        assert_eq!(err("2 # 3"), "unexpected character `#` at position 3");
        assert_eq!(err("1 2"), "unexpected number `2` at position 3");
        assert_eq!(err(""), "empty expression at position 1");
        assert_eq!(err("2(3)"), "unexpected `(` at position 2");
        assert_eq!(
            err("x + 1"),
            "unknown name `x`; the constants are pi and e at position 1"
        );
        assert_eq!(
            err("1 + foo(2)"),
            format!("unknown function `foo`; the functions are {FUNCTIONS} at position 5")
        );
        assert_eq!(
            err("min(1)"),
            "`min` takes 2 arguments, got 1 at position 1"
        );
        assert_eq!(
            err("sqrt(1, 2)"),
            "`sqrt` takes 1 argument, got 2 at position 1"
        );
        assert_eq!(
            err("sqrt 4"),
            "function `sqrt` needs parentheses, e.g. `sqrt(2)` at position 1"
        );
        assert_eq!(err("1e999"), "number `1e999` is too large at position 1");
    }

    #[test]
    fn math_errors_name_the_operator() {
        assert_eq!(err("1 / 0"), "division by zero (`/` by 0) at position 3");
        assert_eq!(
            err("5 % (2 - 2)"),
            "division by zero (`%` by 0) at position 3"
        );
        assert_eq!(
            err("2 + sqrt(-4)"),
            "`sqrt` is undefined for -4 at position 5"
        );
        assert_eq!(err("ln(0)"), "`ln` is undefined for 0 at position 1");
        assert_eq!(
            err("10 ^ 400"),
            "`^` overflows (the result is too large) at position 4"
        );
        assert_eq!(
            err("(-8) ^ 0.5"),
            "`^` has no real result here at position 6"
        );
        assert!(matches!(evaluate("1/0"), Err(CalcError::Math { .. })));
    }

    #[test]
    fn depth_limit_stops_hostile_nesting() {
        let ok = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(eval(&ok), 1.0);
        let deep = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            evaluate(&deep),
            Err(CalcError::TooDeep {
                limit: MAX_DEPTH,
                position: MAX_DEPTH + 1
            })
        );
        // Signs and exponents nest too.
        assert!(matches!(
            evaluate(&format!("{}1", "-".repeat(1000))),
            Err(CalcError::TooDeep { .. })
        ));
        let tower = vec!["1"; 1000].join("^");
        assert!(matches!(evaluate(&tower), Err(CalcError::TooDeep { .. })));
        let calls = format!("{}1{}", "abs(".repeat(200), ")".repeat(200));
        assert!(matches!(evaluate(&calls), Err(CalcError::TooDeep { .. })));
    }

    #[test]
    fn length_limit() {
        let long = vec!["1"; MAX_EXPRESSION_CHARS].join("+");
        assert_eq!(
            evaluate(&long),
            Err(CalcError::TooLong {
                len: 2 * MAX_EXPRESSION_CHARS - 1,
                limit: MAX_EXPRESSION_CHARS
            })
        );
    }

    #[test]
    fn integral_results_become_json_integers() {
        assert_eq!(
            to_json_number(391.0).map(|n| n.to_string()),
            Some("391".into())
        );
        assert_eq!(
            to_json_number(-0.0).map(|n| n.to_string()),
            Some("0".into())
        );
        assert_eq!(
            to_json_number(3.5).map(|n| n.to_string()),
            Some("3.5".into())
        );
        assert_eq!(
            to_json_number(2f64.powi(62)).map(|n| n.to_string()),
            Some("4611686018427387904".into())
        );
        assert_eq!(to_json_number(1e20).and_then(|n| n.as_i64()), None);
        assert_eq!(to_json_number(f64::NAN), None);
    }

    proptest! {
        #[test]
        fn binary_ops_match_rust(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000, op in 0usize..5) {
            let (sym, expected) = match op {
                0 => ("+", Some(a as f64 + b as f64)),
                1 => ("-", Some(a as f64 - b as f64)),
                2 => ("*", Some(a as f64 * b as f64)),
                3 => ("/", (b != 0).then(|| a as f64 / b as f64)),
                _ => ("%", (b != 0).then(|| a as f64 % b as f64)),
            };
            // Parenthesize negatives the way a person would; also try the bare form.
            let got = evaluate(&format!("({a}) {sym} ({b})"));
            let bare = evaluate(&format!("{a} {sym} {b}"));
            match expected {
                Some(want) => {
                    prop_assert_eq!(got, Ok(want));
                    prop_assert_eq!(bare, Ok(want));
                }
                None => {
                    prop_assert!(matches!(got, Err(CalcError::Math { .. })), "{:?}", got);
                }
            }
        }

        #[test]
        fn never_panics_on_arbitrary_input(s in "[0-9a-z+*/%^(),. e-]{0,64}") {
            let _ = evaluate(&s);
        }
    }
}
