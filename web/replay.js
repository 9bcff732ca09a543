// A recorded call as something to run again: a curl command and a Python snippet
// (the provider's SDK for OpenAI and Anthropic calls, the standard library for the
// rest). The API key is never in them: each reads it from an environment variable.
// Bodies and header values are untrusted text, so each is quoted as data: single
// quotes for the shell (nothing expands inside them), a JSON string literal for
// Python (every JSON string escape means the same in Python).

/** Why a call cannot be replayed exactly, or null when it can. */
export function replayProblem(record) {
  if (record.request_body === null || record.request_body === undefined) return "the request body is not available to this token";
  if ((record.truncated_parts || []).includes("request")) return "the request body was cut at the capture cap";
  if (record.request_body.includes("\0")) return "the request body holds NUL bytes; download the raw request instead";
  if (!record.upstream_url) return "the provider's address is not known";
  return null;
}

/** `'text'` for a POSIX shell: a quote inside is closed, escaped and reopened. */
export function shellQuote(text) {
  return `'${String(text).replaceAll("'", "'\\''")}'`;
}

/** The environment variable a snippet reads the key from: `OPENAI_API_KEY` for provider `openai`. */
export function keyVariable(record) {
  const name = String(record.provider || record.kind || "llm").toUpperCase().replace(/[^A-Z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  return `${/^[0-9]/.test(name) ? `P_${name}` : name || "LLM"}_API_KEY`;
}

/** The header that carries the key for a provider kind, its value naming `variable`. */
function keyHeader(kind, variable, shell) {
  const ref = shell ? `$${variable}` : null;
  if (kind === "anthropic") return ["x-api-key", ref];
  if (kind === "gemini") return ["x-goog-api-key", ref];
  return ["Authorization", ref && `Bearer ${ref}`];
}

/** Request headers worth sending again besides the key (versions and betas). */
const KEPT_HEADERS = ["content-type", "anthropic-version", "anthropic-beta", "openai-beta"];

function keptHeaders(record) {
  const out = [];
  const sent = record.request_headers || {};
  for (const name of KEPT_HEADERS) {
    const value = sent[name];
    if (typeof value === "string" && value !== "") out.push([name, value]);
  }
  if (!out.some(([n]) => n === "content-type")) out.unshift(["content-type", "application/json"]);
  return out;
}

/** The URL without a `key=` query parameter (Gemini's key in the URL: sent as a header instead). */
function urlWithoutKey(raw) {
  try {
    const u = new URL(raw);
    u.searchParams.delete("key");
    return u.toString();
  } catch {
    return raw;
  }
}

/** The request as a curl command. */
export function curlCommand(record) {
  const variable = keyVariable(record);
  const [keyName, keyValue] = keyHeader(record.kind, variable, true);
  const lines = [`curl ${shellQuote(urlWithoutKey(record.upstream_url))}`];
  if ((record.method || "POST") !== "POST") lines.push(`-X ${shellQuote(record.method)}`);
  // The key is a variable reference in double quotes: only the shell fills it in.
  lines.push(`-H "${keyName}: ${keyValue}"`);
  for (const [name, value] of keptHeaders(record)) lines.push(`-H ${shellQuote(`${name}: ${value}`)}`);
  lines.push(`--data-binary ${shellQuote(record.request_body)}`);
  return lines.join(" \\\n  ");
}

/** The SDK call of an endpoint: [module, client class, method path], or null. */
const SDK = {
  "openai:chat_completions": ["openai", "OpenAI", "chat.completions.create", "/chat/completions"],
  "openai:responses": ["openai", "OpenAI", "responses.create", "/responses"],
  "openai:embeddings": ["openai", "OpenAI", "embeddings.create", "/embeddings"],
  "anthropic:messages": ["anthropic", "Anthropic", "messages.create", "/v1/messages"],
};

/** The request as a Python snippet; `python3 -c` of it sends the same request. */
export function pythonSnippet(record) {
  const variable = keyVariable(record);
  const py = (text) => JSON.stringify(String(text));
  const url = urlWithoutKey(record.upstream_url);
  const sdk = SDK[`${record.kind}:${record.endpoint}`];
  const path = url.split("?")[0];
  if (sdk && path.endsWith(sdk[3]) && !url.includes("?")) {
    const [module, cls, method, suffix] = sdk;
    const base = path.slice(0, path.length - suffix.length);
    return [
      "import json",
      "import os",
      "",
      `from ${module} import ${cls}`,
      "",
      `client = ${cls}(api_key=os.environ[${py(variable)}], base_url=${py(base)}, max_retries=0)`,
      `body = json.loads(${py(record.request_body)})`,
      `response = client.${method}(**body)`,
      "if body.get(\"stream\"):",
      "    for event in response:",
      "        print(event)",
      "else:",
      "    print(response)",
      "",
    ].join("\n");
  }
  const [keyName] = keyHeader(record.kind, variable, false);
  const keyValue = keyName === "Authorization" ? `"Bearer " + os.environ[${py(variable)}]` : `os.environ[${py(variable)}]`;
  const headerLines = [`    ${py(keyName)}: ${keyValue},`, ...keptHeaders(record).map(([n, v]) => `    ${py(n)}: ${py(v)},`)];
  return [
    "import os",
    "import urllib.request",
    "",
    `body = ${py(record.request_body)}.encode()`,
    "headers = {",
    ...headerLines,
    "}",
    `request = urllib.request.Request(${py(url)}, data=body, headers=headers, method=${py(record.method || "POST")})`,
    "with urllib.request.urlopen(request) as response:",
    "    print(response.read().decode())",
    "",
  ].join("\n");
}
