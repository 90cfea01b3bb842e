// Verifies one delivered message with the Standard Webhooks reference library. Reads
// { secret, id, timestamp, signature, body } as JSON on stdin; prints the verified payload
// as JSON, or exits 1 with the library's error.
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const m = JSON.parse(input);
  try {
    const payload = new Webhook(m.secret).verify(m.body, {
      "webhook-id": m.id,
      "webhook-timestamp": m.timestamp,
      "webhook-signature": m.signature,
    });
    process.stdout.write(JSON.stringify(payload));
  } catch (e) {
    process.stderr.write(String(e && e.message ? e.message : e));
    process.exit(1);
  }
});
