// A scripted local HTTP server for the unit tests: each request is recorded and answered by the
// next handler in the script (or by the fallback), so retries, error mapping and call shapes can
// be checked without Custody. The integration tests use the real server.
import http from "node:http";

export async function fakeServer(fallback = (req, res) => json(res, 404, problem(404, "not_found"))) {
  const requests = [];
  const script = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const record = { method: req.method, url: req.url, headers: req.headers, body };
      requests.push(record);
      const handler = script.shift() ?? fallback;
      handler(req, res, record);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    /** Queues handlers for the next requests, in order. */
    answer(...handlers) {
      script.push(...handlers);
      return this;
    },
    async close() {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export function json(res, status, body, headers = {}) {
  const type = status >= 400 ? "application/problem+json" : "application/json";
  res.writeHead(status, { "content-type": type, "x-request-id": "req-123", ...headers });
  res.end(JSON.stringify(body));
}

export function problem(status, code, detail = `${code} happened`) {
  return { type: `urn:custody:error:${code}`, title: "Error", status, detail, code };
}

export const respond = (status, body, headers) => (req, res) => json(res, status, body, headers);

/** Drops the connection without an answer (a connection error for the client). */
export const hangUp = () => (req, res) => req.socket.destroy();
