// A few lines of vanilla JS, no build step: the instructions preview, confirmations, and the
// knowledge base status while it is being indexed. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const instructions = document.getElementById("instructions");
  const clientName = document.getElementById("client_name");
  const preview = document.getElementById("instructions-preview");
  if (instructions && clientName && preview) {
    const update = () => {
      // A function replacement, so "$&" and friends in the name are taken literally.
      preview.textContent = instructions.value.replace(/\{\{\s*Cliente\s*\}\}/g, () => clientName.value);
    };
    instructions.addEventListener("input", update);
    clientName.addEventListener("input", update);
    update();
  }

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  const status = document.getElementById("kb-status");
  if (status && status.dataset.status === "processing") {
    const poll = async () => {
      try {
        const response = await fetch("/api/settings", { credentials: "same-origin" });
        if (response.ok) {
          const kb = (await response.json()).knowledge_base;
          if (kb.status !== "processing") {
            status.dataset.status = kb.status;
            status.className = "status status-" + kb.status;
            status.textContent = kb.status === "ready"
              ? "Ready: “" + kb.filename + "” (" + kb.pages + (kb.pages === 1 ? " page)." : " pages).")
                + (kb.enabled ? " The assistant uses it from now on." : " Tick “Enable PDF knowledge base” to use it.")
              : "Failed: " + (kb.error || "unknown reason");
            return;
          }
        }
      } catch (error) {
        // The server may be restarting: try again at the next tick.
      }
      setTimeout(poll, 3000);
    };
    setTimeout(poll, 3000);
  }
});
