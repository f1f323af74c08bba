// Starts Swagger UI on /docs. A file of its own, not an inline script, so the page's
// Content-Security-Policy can forbid inline scripts. The OpenAPI document's address
// comes from the page (relative, so the gateway may sit under a path prefix).
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Tokens stay in this tab's memory: "Authorize" again after a reload.
    persistAuthorization: false,
    tryItOutEnabled: false,
    // The default sends the document to an online validator: nothing leaves this server.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
