// A small MCP server on the official TypeScript SDK whose tool list changes: calling `grow`
// registers the tool `extra`, which makes the SDK send `notifications/tools/list_changed`.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";

const server = new McpServer(
  { name: "pocket-test-dynamic", version: "1.0.0" },
  { capabilities: { tools: { listChanged: true } } },
);

let grown = false;
server.registerTool(
  "grow",
  { description: "Adds the tool `extra` to this server.", inputSchema: {} },
  async () => {
    if (!grown) {
      grown = true;
      server.registerTool(
        "extra",
        { description: "Exists only after `grow`.", inputSchema: {} },
        async () => ({ content: [{ type: "text", text: "extra is here" }] }),
      );
    }
    return { content: [{ type: "text", text: "grown" }] };
  },
);

console.error("dynamic test server ready");
await server.connect(new StdioServerTransport());
