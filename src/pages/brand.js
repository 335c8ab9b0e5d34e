// The organisation's look (docs/OPERATIONS.md, "The tenant's own front end"). At an
// organisation's own address GET /api/v1/brand names it, by the host the page was opened
// at: the page takes its colour, its logo in the header and its name where the page says
// "OneCard". At the platform's own address it answers the platform, and nothing changes.
"use strict";
window.onecardBrand = (async () => {
  let brand;
  try {
    const res = await fetch("/api/v1/brand");
    if (!res.ok) return null;
    brand = await res.json();
  } catch (_) {
    return null;
  }
  if (!brand.tenant_id) return brand;
  const root = document.documentElement;
  if (brand.accent_color) root.style.setProperty("--accent", brand.accent_color);
  document.title = document.title.replace(/^OneCard/, brand.name);
  for (const h1 of document.querySelectorAll("header h1")) {
    if (h1.textContent === "OneCard") h1.textContent = brand.name;
  }
  const header = document.querySelector("header");
  if (header && brand.logo_url) {
    const logo = document.createElement("img");
    logo.className = "brand";
    logo.src = brand.logo_url;
    logo.alt = "";
    logo.dataset.testid = "brand-logo";
    header.prepend(logo);
  }
  return brand;
})();
