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
  inspect: { summary: 'validate a checkpoint (folder, adapter or .safetensors) and print it as JSON', load: () => import('./inspect.js') },
};
