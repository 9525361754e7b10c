//! Bytes to text for the model.

/// Text from bytes, invalid UTF-8 replaced by U+FFFD. When `truncated`, a multi-byte
/// character cut at the end is dropped rather than replaced.
pub(crate) fn lossy_text(mut bytes: Vec<u8>, truncated: bool) -> String {
    if truncated
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        bytes.truncate(e.valid_up_to());
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::lossy_text;

    #[test]
    fn truncation_drops_a_cut_character() {
        let text = "héllo".as_bytes().to_vec(); // é is two bytes: 0xc3 0xa9
        assert_eq!(lossy_text(text[..2].to_vec(), true), "h");
        assert_eq!(lossy_text(text[..2].to_vec(), false), "h\u{fffd}");
        assert_eq!(lossy_text(text[..3].to_vec(), true), "hé");
        assert_eq!(lossy_text(vec![0xff, b'a'], true), "\u{fffd}a");
    }
}
