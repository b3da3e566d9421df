// The official `openai` npm client (v6) against `heavykv serve` on an ephemeral loopback port: models
// list/retrieve, completion, chat completion, streamed chat completion, and 401 without the API key.
// Run by CTest (test_openai_node). Needs: node, tests/node/node_modules (scripts/setup.sh runs `npm ci`),
// env HKV_CLI (the heavykv binary) and HKV_CHAT_MODEL (a GGUF with a chat template; made with `heavykv synth`
// when missing). Exit 77 (CTest: skipped) only when the openai package is not installed.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
let OpenAI;
try {
  OpenAI = (await import(require.resolve("openai"))).default;
} catch {
  console.log("SKIP: the openai npm package is not installed in tests/node (run scripts/setup.sh with npm available)");
  process.exit(77);
}

const cli = process.env.HKV_CLI;
const model = process.env.HKV_CHAT_MODEL;
// HEAVYKV_SHARED overrides the fixtures directory, as it does for the C tests.
const tokenizer = process.env.HEAVYKV_SHARED
  ? `${process.env.HEAVYKV_SHARED}/tokenizers/qwen3/tokenizer.json`
  : process.env.HKV_TOKENIZER;
assert.ok(cli && model && tokenizer, "HKV_CLI, HKV_CHAT_MODEL and HKV_TOKENIZER must be set");
if (!existsSync(model)) {
  const r = spawnSync(cli, ["synth", "--preset", "tiny", "--tokenizer", tokenizer, "--type", "Q8_0", "-t", "2", "-o", model],
                      { stdio: "inherit" });
  assert.equal(r.status, 0, "heavykv synth failed");
}

const KEY = "test-key-123";
const server = spawn(cli, ["serve", "-m", model, "--port", "0", "-c", "256", "-t", "1", "--api-key", KEY,
                           "--alias", "tiny-chat"], { stdio: ["ignore", "ignore", "pipe"] });
let log = "";
const port = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("server did not start: " + log)), 60000);
  server.stderr.on("data", (d) => {
    log += d;
    const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
    if (m) { clearTimeout(timer); resolve(Number(m[1])); }
  });
  server.on("exit", (code) => reject(new Error(`server exited (${code}): ${log}`)));
});

const baseURL = `http://127.0.0.1:${port}/v1`;
const client = new OpenAI({ baseURL, apiKey: KEY, maxRetries: 0, timeout: 60000 });
let failures = 0;
async function check(name, fn) {
  try { await fn(); console.log("ok  ", name); }
  catch (e) { failures++; console.log("FAIL", name, e?.stack ?? e); }
}

await check("models.list", async () => {
  const list = await client.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert.deepEqual(ids, ["tiny-chat"]);
});
await check("models.retrieve", async () => {
  const m = await client.models.retrieve("tiny-chat");
  assert.equal(m.id, "tiny-chat");
  assert.equal(m.object, "model");
  await assert.rejects(client.models.retrieve("other"), (e) => e.status === 404);
});
await check("completions.create", async () => {
  const r = await client.completions.create({ model: "tiny-chat", prompt: "Hello", max_tokens: 5, temperature: 0 });
  assert.equal(r.object, "text_completion");
  assert.equal(typeof r.choices[0].text, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.completion_tokens <= 5 && r.usage.prompt_tokens > 0);
});
const messages = [{ role: "system", content: "You are terse." }, { role: "user", content: "Say hello." }];
let plain = "";
await check("chat.completions.create", async () => {
  const r = await client.chat.completions.create({ model: "tiny-chat", messages, max_tokens: 12, temperature: 0 });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  plain = r.choices[0].message.content;
});
await check("chat.completions.create stream", async () => {
  const stream = await client.chat.completions.create({ model: "tiny-chat", messages, max_tokens: 12, temperature: 0,
                                                         stream: true, stream_options: { include_usage: true } });
  let text = "", finish = null, chunks = 0, usage = null;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    text += c.delta?.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.ok(chunks >= 1);
  assert.equal(text, plain, "streamed text equals the non-streamed text (greedy)");
  assert.ok(["stop", "length"].includes(finish));
  assert.ok(usage && usage.completion_tokens >= 1);
});
await check("n=2 is a clear 400", async () => {
  await assert.rejects(client.chat.completions.create({ model: "tiny-chat", messages, n: 2 }),
                       (e) => e.status === 400 && /'n'/.test(e.message));
});
await check("401 without the key", async () => {
  const anon = new OpenAI({ baseURL, apiKey: "wrong-key", maxRetries: 0 });
  await assert.rejects(anon.models.list(), (e) => e.status === 401 && e.code === "invalid_api_key");
  await assert.rejects(anon.chat.completions.create({ model: "tiny-chat", messages }), (e) => e.status === 401);
});

server.kill("SIGTERM");
const code = await new Promise((resolve) => server.on("exit", (c) => resolve(c)));
if (code !== 0) { failures++; console.log("FAIL server exit status", code, log); }
console.log(failures ? `${failures} failed` : "all passed");
process.exit(failures ? 1 : 0);
