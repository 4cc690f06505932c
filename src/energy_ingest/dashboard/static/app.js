// energy-ingest dashboard: small progressive enhancements; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Filters apply when changed (a keyboard user can still tab to the button and press it).
  for (const control of document.querySelectorAll("[data-autosubmit]")) {
    control.addEventListener("change", () => control.form && control.form.requestSubmit());
  }
  // Typing a date picks the custom window.
  for (const input of document.querySelectorAll('form.window input[type="datetime-local"]')) {
    input.addEventListener("input", () => {
      const custom = input.form.querySelector('input[name="window"][value="custom"]');
      if (custom) custom.checked = true;
    });
  }
  // Instants shown in UTC also say the reader's local time on hover.
  for (const row of document.querySelectorAll("tr[data-start]")) {
    const at = new Date(row.dataset.start);
    if (!isNaN(at)) row.title = "local time: " + at.toLocaleString();
  }
});
