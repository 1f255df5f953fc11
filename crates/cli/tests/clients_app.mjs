// An app that gets checked answers from a verinfer gateway through
// clients/js (`VerifiedClient`), streamed and not.
//
// Usage: node clients_app.mjs MODULE URL API_KEY LOG_KEY
//
// Prints `receipt: ID` for each checked answer and ends with `ok`.

const [modulePath, url, apiKey, logKey] = process.argv.slice(2);
const { VerifiedClient, pinTrust } = await import(modulePath);

const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`);
};
const body = { model: "smollm2-135m", messages: [{ role: "user", content: "Name a fruit." }], max_tokens: 8 };

const client = new VerifiedClient({ baseURL: url, apiKey, trust: pinTrust({ logKey }) });
const answer = await client.chat(body);
check(answer.verinfer.status === "verified", `chat: ${answer.verinfer.status}`);
console.log(`chat: ${JSON.stringify(answer.choices[0].message.content)} final=${answer.verinfer.final}`);
console.log(`receipt: ${answer.verinfer.receipt.id}`);

const waiting = new VerifiedClient({ baseURL: url, apiKey, trust: pinTrust({ logKey }), waitFinal: true });
let text = "";
let last = null;
for await (const chunk of waiting.stream(body)) {
  for (const c of chunk.choices || []) text += (c.delta && c.delta.content) || "";
  last = chunk;
}
check(last.verinfer && last.verinfer.final && last.verinfer.status === "verified", "stream: not final and verified");
check(text === last.verinfer.receipt.receipt.result.output_text, "stream: text");
console.log(`stream: ${JSON.stringify(text)} final=${last.verinfer.final}`);
console.log(`receipt: ${last.verinfer.receipt.id}`);
console.log("ok");
