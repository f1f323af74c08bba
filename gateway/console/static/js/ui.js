// What every page shares: the header and its navigation, signing in, small helpers.

import { allows, current, signInWithToken, signOut, whoami } from "./api.js";

// A DOM element: el("a", {href: "/x", class: "y"}, "text", child, ...).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clock(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const total = Math.max(0, seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = Math.floor(total % 60);
  const mm = String(m).padStart(h ? 2 : 1, "0");
  return `${h ? `${h}:` : ""}${mm}:${String(s).padStart(2, "0")}`;
}

export function bytes(count) {
  if (count === null || count === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function badge(text, kind = text) {
  return el("span", { class: `badge badge-${kind}` }, text);
}

// A message in the page's live region, read out by screen readers.
export function announce(text) {
  const region = document.getElementById("announcer");
  if (region) region.textContent = text;
}

export function showError(where, error) {
  where.replaceChildren(el("p", { class: "error", role: "alert" }, error.message || String(error)));
}

const LINKS = [
  { href: "/console/", label: "Files", page: "files" },
  { href: "/console/search", label: "Search", page: "search" },
  { href: "/console/ops", label: "Operations", page: "ops", scope: "admin" },
];

function header(page) {
  const who = current();
  const nav = el(
    "nav",
    { "aria-label": "Console" },
    el(
      "ul",
      {},
      LINKS.filter((link) => !link.scope || allows(link.scope)).map((link) =>
        el(
          "li",
          {},
          el(
            "a",
            { href: link.href, "aria-current": link.page === page ? "page" : undefined },
            link.label,
          ),
        ),
      ),
    ),
  );
  const account = el(
    "div",
    { class: "account" },
    el("span", { class: "who", "data-testid": "who" }, who.subject),
    el("span", { class: "tenant" }, who.admin ? "admin" : who.tenant || "default"),
    el(
      "button",
      {
        type: "button",
        class: "link",
        onclick: async () => {
          await signOut();
          window.location.reload();
        },
      },
      "Sign out",
    ),
  );
  return [el("a", { class: "brand", href: "/console/" }, "ai2text"), nav, account];
}

function signInForm(main, onDone) {
  const input = el("textarea", {
    id: "token",
    name: "token",
    rows: 4,
    required: true,
    autocomplete: "off",
    spellcheck: "false",
  });
  const status = el("p", { class: "error", role: "alert" });
  const form = el(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    el(
      "p",
      {},
      "Open the sign-in link that ",
      el("code", {}, "ai2text up"),
      " printed, or paste an access token (a JWT, as ",
      el("code", {}, "ai2text token"),
      " mints):",
    ),
    el("label", { for: "token" }, "Access token"),
    input,
    el("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "";
    try {
      await signInWithToken(input.value.trim());
      onDone();
    } catch (error) {
      status.textContent = error.message;
    }
  });
  main.replaceChildren(form);
  input.focus();
}

// Sign in if needed, draw the header, then run the page's own start(main).
export async function startPage(page, start, { scope } = {}) {
  const main = document.getElementById("main");
  const top = document.getElementById("top");
  let who = null;
  try {
    who = await whoami();
  } catch (error) {
    showError(main, error);
    return;
  }
  if (!who) {
    top.replaceChildren(el("a", { class: "brand", href: "/console/" }, "ai2text"));
    signInForm(main, () => window.location.reload());
    return;
  }
  top.replaceChildren(...header(page));
  if (scope && !allows(scope)) {
    main.replaceChildren(
      el("h1", {}, "Not allowed"),
      el("p", { role: "alert" }, `This page needs the ${scope} scope.`),
    );
    return;
  }
  await start(main);
}
