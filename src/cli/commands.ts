/**
 * The command table. Each command lives in its own module, loaded only when run, so `fgsn inspect`
 * never pulls in fastify or onnxruntime. A module exports `run(args): Promise<number>` (exit status).
 */
export interface CommandModule {
  run(args: string[]): Promise<number>;
}

export interface CommandEntry {
  summary: string;
  load(): Promise<CommandModule>;
}

export const COMMANDS: Record<string, CommandEntry> = {
  demo: { summary: 'end-to-end demo on built-in planted models: attack, harden, measure (no Redis, no network)', load: () => import('./demo.js') },
  eval: { summary: 'evaluate a model: harmful/emerging ASR + compliance, task exact match, over-refusal', load: () => import('./eval.js') },
  trace: { summary: 'activations (embed, hidden, mlp_act, final_norm, logits) of chat prompts to safetensors', load: () => import('./trace.js') },
  generate: { summary: 'greedy batched generation for chat prompts, JSONL on stdout', load: () => import('./generate.js') },
  inspect: { summary: 'validate a checkpoint (folder, adapter or .safetensors) and print it as JSON', load: () => import('./inspect.js') },
  attribute: { summary: 'first-order attribution: per-row <dLoss/dW, M> of every linear weight for response NLL', load: () => import('./attribute.js') },
  harden: { summary: 'harden a fine-tuned model (or LoRA adapter): find the safety neurons and project them', load: () => import('./harden.js') },
  continue: { summary: 'patch a hardened model for a new harm category (only rows not projected before)', load: () => import('./continue.js') },
  atlas: { summary: 'build, list, show or extend the cached safety atlas of an aligned model', load: () => import('./atlas.js') },
  'apply-diff': { summary: 'rebuild a hardened model from its source checkpoint and a row diff (bit-for-bit)', load: () => import('./apply-diff.js') },
  remote: { summary: 'run harden on a fgsn server: upload, submit, follow, download with every sha256 checked', load: () => import('./remote.js') },
  serve: { summary: 'run the HTTP API (--with-worker: and one harden worker in-process)', load: () => import('./serve.js') },
  worker: { summary: 'run a harden worker (BullMQ queue "harden", sandboxed processors)', load: () => import('./worker.js') },
  report: { summary: 'render a harden report.json as self-contained report.html (charts as inline SVG)', load: () => import('./report.js') },
  openapi: { summary: 'print the OpenAPI 3.1 document of the HTTP API', load: () => import('./openapi.js') },
};
