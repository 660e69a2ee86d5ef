// Renders /openapi.json with the vendored Redoc 2 (assets/docs/README.md), a classic script that
// index.html loads after redoc.standalone.js, which sets the window.Redoc global. A separate file,
// not an inline script, so the page works under a Content-Security-Policy without 'unsafe-inline'
// for scripts.
Redoc.init(
  "/openapi.json",
  {
    // Keeps the "Download" button (a link to /openapi.json) in the page's header.
    hideDownloadButton: false,
    // Opens the success responses of each operation; the others stay collapsed.
    expandResponses: "200,201",
  },
  document.getElementById("redoc-container"),
);
