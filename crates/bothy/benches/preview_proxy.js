// Upstream for the preview-proxy benchmark: a small body at /, a large one at /big.
const http = require("http");
const big = Buffer.alloc(Number(process.argv[3] || 64 << 20), 120);
http
  .createServer((req, res) => {
    if (req.url === "/big") {
      res.writeHead(200, { "content-length": big.length });
      res.end(big);
    } else {
      res.writeHead(200, { "content-length": 5 });
      res.end("hello");
    }
  })
  .listen(Number(process.argv[2]), "127.0.0.1", () => console.log("bench upstream ready"));
