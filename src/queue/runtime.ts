import type { Config } from '../config.js';

/** The part of the configuration a sandboxed processor needs, handed over in its environment. */
export type ProcessorRuntime = Pick<Config, 'dataDir' | 'storage' | 'executionProvider'> & Partial<Pick<Config, 'minFreeDiskMb'>>;

export const RUNTIME_ENV = 'FGSN_PROCESSOR_RUNTIME';

export function runtimeToEnv(config: ProcessorRuntime): string {
  return JSON.stringify({ dataDir: config.dataDir, storage: config.storage, executionProvider: config.executionProvider, minFreeDiskMb: config.minFreeDiskMb });
}

export function runtimeFromEnv(env: NodeJS.ProcessEnv = process.env): ProcessorRuntime {
  const raw = env[RUNTIME_ENV];
  if (raw === undefined) throw new Error(`${RUNTIME_ENV} is not set: the processor runs only under fgsn worker`);
  return JSON.parse(raw) as ProcessorRuntime;
}
