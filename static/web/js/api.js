// Helpers the pages share. The API paths are those API.md documents (the public contract).

export const $ = (id) => document.getElementById(id);

/** Django's CSRF token, from its cookie (empty when the page set none). */
export const csrf = () => decodeURIComponent((document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "");

/** A value the server put in the page with the json_script filter. */
export const data = (id) => JSON.parse($(id).textContent);

export const paths = {
  search: "/api/v1/search/",
  gallery: "/api/v1/gallery/",
  galleryDelete: "/api/v1/gallery/delete/",
  indexStatus: "/api/v1/index/status/",
  jobs: "/api/v1/index/jobs/",
  job: (id) => `/api/v1/index/jobs/${id}/`,
  jobEvents: (id) => `/api/v1/index/jobs/${id}/events/`,
  jobCancel: (id) => `/api/v1/index/jobs/${id}/cancel/`,
  models: "/api/v1/models/",
  modelActivate: (key) => `/api/v1/models/${key}/activate/`,
  importCancel: (id) => `/api/v1/products/imports/${id}/cancel/`,
  signatureCompare: "/api/v1/signatures/compare/",
  signers: "/api/v1/signatures/signers/",
  references: (signer) => `/api/v1/signatures/signers/${signer}/references/`,
  verify: (signer) => `/api/v1/signatures/signers/${signer}/verify/`,
  encoderActivate: (key) => `/api/v1/signatures/models/${key}/activate/`,
};

/** The message of an API error body ({"error": {"message": ...}}), else a generic one. */
export const problem = (body, status) => (body && body.error ? body.error.message : `The server answered ${status}.`);

/**
 * fetch() with the session's CSRF token, answering the JSON body (null for 204). `json` in
 * options sends that value as a JSON POST. Throws an Error carrying `status` when not ok.
 */
export async function api(url, options = {}) {
  const {json, ...rest} = options;
  const init = {credentials: "same-origin", ...rest};
  const headers = {"X-CSRFToken": csrf(), "Accept": "application/json", ...(rest.headers || {})};
  if (json !== undefined) {
    init.method = rest.method || "POST";
    init.body = JSON.stringify(json);
    headers["Content-Type"] = "application/json";
  }
  init.headers = headers;
  const response = await fetch(url, init);
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(problem(body, response.status));
    error.status = response.status;
    throw error;
  }
  return body;
}

/** A message at the bottom right (#toasts), gone after a few seconds. */
export function toast(text, error = false) {
  const t = document.createElement("div"); t.className = "toast" + (error ? " error" : ""); t.textContent = text;
  $("toasts").append(t); setTimeout(() => t.remove(), error ? 8000 : 4000);
}

/** A similarity bar (.bar > span) filled to `fraction` (through the CSSOM: the CSP allows it). */
export function similarityBar(fraction) {
  const bar = document.createElement("div"); bar.className = "bar";
  const fill = document.createElement("span"); fill.style.width = `${Math.max(0, fraction) * 100}%`;
  bar.append(fill);
  return bar;
}

/** The bars the server rendered: their width is in data-percent, not in a style attribute. */
export function fillBars(root = document) {
  root.querySelectorAll(".bar > span[data-percent]").forEach((fill) => { fill.style.width = `${fill.dataset.percent}%`; });
}
