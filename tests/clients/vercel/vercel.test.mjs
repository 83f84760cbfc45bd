// The Vercel AI SDK's default OpenAI provider (which speaks the Responses API) against aiproxy:
// generateText, streamText and generateObject. Run by tests/clients/run.sh with AIPROXY_BASE
// and AIPROXY_KEY; exits non-zero on the first failure.
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, streamText } from "ai";
import assert from "node:assert/strict";
import { z } from "zod";

globalThis.AI_SDK_LOG_WARNINGS = false;
const base = process.env.AIPROXY_BASE ?? "http://localhost:3000";
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: process.env.AIPROXY_KEY ?? "your-api-key" });
const model = openai("claude-sonnet-4-5");
const directive = (step) => "fake-kiro: " + JSON.stringify(step);

const text = await generateText({ model, prompt: directive({ text: "Hello from Kiro" }) });
assert.equal(text.text, "Hello from Kiro");
assert.equal(text.finishReason, "stop");
assert.ok(text.usage.outputTokens > 0);

const stream = streamText({ model, prompt: directive({ text: "one two three" }) });
let streamed = "";
for await (const part of stream.textStream) streamed += part;
assert.equal(streamed, "one two three");
assert.equal(await stream.finishReason, "stop");

const person = z.object({ name: z.string(), age: z.number().int() });
const object = await generateObject({
  model,
  schema: person,
  schemaName: "person",
  prompt: "Who?\n" + directive({ tool_calls: [{ name: "person", input: { name: "Ada", age: 36 } }] }),
});
assert.deepEqual(object.object, { name: "Ada", age: 36 });
console.log("vercel ai sdk: generateText, streamText, generateObject ok");
