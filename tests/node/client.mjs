// Drives the real @fal-ai/client against falbudget proxy; run by tests/test_proxy_node.py.
// usage: node client.mjs SCENARIO PROXY_URL  -> one JSON line on stdout with what happened.
import { fal } from "@fal-ai/client";

const [scenario, proxyUrl] = process.argv.slice(2);
const MAGI = "fal-ai/magi/image-to-video";
const input = { prompt: "a fox", image_url: "https://example.invalid/fox.png" };

// In Node the client proxies only when told to ("always"); in a browser it does by default.
fal.config({
  proxyUrl: { url: proxyUrl, when: "always" },
  requestMiddleware: async (request) => ({
    ...request,
    headers: { ...request.headers, authorization: `Bearer ${process.env.FALBUDGET_KEY}` },
  }),
});

async function run() {
  switch (scenario) {
    case "subscribe": {
      const result = await fal.subscribe(MAGI, { input, pollInterval: 10 });
      return { requestId: result.requestId, data: result.data };
    }
    case "queue": {
      const { request_id } = await fal.queue.submit(MAGI, { input });
      const status = await fal.queue.status(MAGI, { requestId: request_id });
      const result = await fal.queue.result(MAGI, { requestId: request_id });
      return { requestId: request_id, status: status.status, data: result.data };
    }
    case "cancel": {
      const { request_id } = await fal.queue.submit(MAGI, { input });
      await fal.queue.cancel(MAGI, { requestId: request_id });
      return { requestId: request_id };
    }
    case "refused": {
      try {
        await fal.queue.submit(MAGI, { input });
        return { refused: false };
      } catch (error) {
        return { refused: true, name: error.name, status: error.status, body: error.body };
      }
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

run().then(
  (outcome) => console.log(JSON.stringify(outcome)),
  (error) => {
    console.log(JSON.stringify({ error: String(error), status: error.status, body: error.body }));
    process.exitCode = 1;
  },
);
