// The console's one way to the server: the public /v1 API with the session cookie.
//
// The cookie comes from the sign-in link `ai2text up` prints or from a pasted token
// (POST /console/session); GET /console/me says who it is and gives the CSRF token
// that every state change carries.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let session = null; // GET /console/me: {subject, tenant, scopes, admin, csrf_token}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (session && session.csrf_token) {
    headers["X-CSRF-Token"] = session.csrf_token;
  }
  return headers;
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      // fall through: a body that is not the JSON it claims
    }
  }
  return { title: response.statusText || `HTTP ${response.status}`, status: response.status };
}

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: authHeaders(headers), credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    throw new ApiError(response.status, await problemOf(response));
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// Who is signed in, or null.
export async function whoami() {
  const response = await fetch("/console/me", { credentials: "same-origin" });
  if (response.status === 401) {
    session = null;
    return null;
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  session = await response.json();
  return session;
}

export function current() {
  return session;
}

export function allows(scope) {
  if (!session) return false;
  const scopes = session.scopes || [];
  return scopes.includes("admin") || scopes.includes(scope);
}

// Sign in with a pasted token: the server answers with a session cookie.
export async function signInWithToken(token) {
  const response = await fetch("/console/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (!response.ok) {
    if (response.status === 401) throw new ApiError(401, { title: "That token was not accepted" });
    throw new ApiError(response.status, await problemOf(response));
  }
  const who = await whoami();
  if (!who) throw new ApiError(401, { title: "That token was not accepted" });
  return who;
}

export async function signOut() {
  await fetch("/console/session", {
    method: "DELETE",
    credentials: "same-origin",
    headers: authHeaders(),
  });
  session = null;
}

// Upload one file with progress: resolves with the API's answer, rejects with an ApiError.
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/audio");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText || "{}");
      } catch {
        body = { title: xhr.statusText };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { title: "network error" })));
    xhr.addEventListener("abort", () => reject(new ApiError(0, { title: "upload cancelled" })));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

export const STATES = ["queued", "processing", "transcribed", "failed", "rejected", "duplicate"];

// Subscribe to GET /v1/events: onEvent(type, data). Returns a function that stops it.
// EventSource reconnects by itself and resumes with Last-Event-ID; it gives up only
// when refused (the session ended), and then onClosed is called.
export function events(query, onEvent, onClosed = () => {}) {
  const source = new EventSource(`/v1/events${query ? `?${query}` : ""}`, { withCredentials: true });
  const types = [...STATES.map((s) => `audio.${s}`), "audio.progress", "transcript.corrected"];
  for (const type of types) {
    source.addEventListener(type, (event) => onEvent(type, JSON.parse(event.data)));
  }
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) onClosed();
  });
  return () => source.close();
}
