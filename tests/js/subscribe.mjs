// A WhatWG EventSource (the npm `eventsource` package) for tests/test_stream_process.py.
// usage: node subscribe.mjs URL
// Prints one JSON line per happening on stdout:
//   {"kind": "open"}
//   {"kind": "error", "code": ..., "message": ..., "readyState": ...}
//   {"kind": "event", "lastEventId": ..., "type": ..., "data": ...}
// It reconnects by itself (sending Last-Event-ID) until it is sent SIGTERM.
import { EventSource } from "eventsource";

const TYPES = [
  "created", "started", "progress", "log", "succeeded", "failed", "cancelled",
  "snapshot", "cancel_requested", "reset", "message",
];

const url = process.argv[2];
if (!url) {
  process.stderr.write("usage: node subscribe.mjs URL\n");
  process.exit(2);
}

const print = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);
const source = new EventSource(url);

source.addEventListener("open", () => print({ kind: "open" }));
source.addEventListener("error", (event) =>
  print({
    kind: "error",
    code: event.code ?? null,
    message: event.message ?? null,
    readyState: source.readyState,
  }),
);
for (const type of TYPES) {
  source.addEventListener(type, (event) =>
    print({ kind: "event", lastEventId: event.lastEventId, type: event.type, data: event.data }),
  );
}

const stop = () => {
  source.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
