/**
 * What the defense benchmark needs to know about the dev testbed: its fine-tunes, which are LoRA adapters,
 * their downstream task, and the probe sets a defender may use. Probes come ONLY from train/probe splits;
 * the *_eval / *_test splits are read by src/eval only, to measure.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GUARDRAIL_PROBES } from '../../src/pipeline/index.js';
import type { ProbeRecord } from '../../src/pipeline/types.js';
import { TESTBED_TASKS } from '../../test/support/eval-testbed.js';

export const DEV_FINETUNES = [
  'ft_sst_benign',
  'ft_sst_p10',
  'ft_agnews_p10',
  'ft_gsm_p10',
  'ft_harmful',
  'lora_sst_p10',
  'lora_harmful',
  'lora_instruct_benign',
] as const;

export interface FinetuneInfo {
  name: string;
  /** Full weights folder, or undefined for an adapter. */
  finetunedPath?: string;
  /** PEFT adapter folder over `aligned`. */
  adapterPath?: string;
  /** The user's downstream task (testbed_info.json), undefined for harmful-only fine-tunes. */
  task?: string;
  harmfulFraction?: number;
}

export function finetuneInfo(testbed: string, name: string): FinetuneInfo {
  const dir = join(testbed, name);
  const infoFile = join(dir, 'testbed_info.json');
  if (!existsSync(infoFile)) throw new Error(`${name}: no testbed_info.json in ${dir}`);
  const info = JSON.parse(readFileSync(infoFile, 'utf8')) as { stage?: string; task?: string | null; harmful_fraction?: number };
  const isAdapter = existsSync(join(dir, 'adapter_config.json'));
  return {
    name,
    ...(isAdapter ? { adapterPath: dir } : { finetunedPath: dir }),
    ...(typeof info.task === 'string' ? { task: info.task } : {}),
    ...(typeof info.harmful_fraction === 'number' ? { harmfulFraction: info.harmful_fraction } : {}),
  };
}

interface RawRecord {
  prompt: string;
  category?: string;
  refusal?: string;
  answer?: string;
}

function readJsonl(file: string): RawRecord[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim().length > 0).map((l) => JSON.parse(l) as RawRecord);
}

/** Every k-th record so that a cap keeps the categories/templates mixed (files are grouped). */
function spread<T>(items: T[], cap: number | undefined): T[] {
  if (cap === undefined || items.length <= cap) return items;
  const out: T[] = [];
  for (let i = 0; i < cap; i += 1) out.push(items[Math.floor((i * items.length) / cap)]);
  return out;
}

export interface ProbeSets {
  harmful: ProbeRecord[];
  benign: ProbeRecord[];
  /** The fine-tune's task probes, with their answers as responses (undefined: defense uses benign). */
  task?: ProbeRecord[];
  /** Provenance, for the report. */
  sources: Record<string, string>;
}

export const PROBE_SPLITS = {
  harmful: 'harmful_align_train',
  emergingProbe: 'harmful_emerging_probe',
  benign: ['lookalike_train', 'instruct_train'],
  task: (task: string): string => `${task}_train`,
  /** Per task of the capability mix (below): an equal share of the answers the task guardrail reads. */
  capabilityPerTask: GUARDRAIL_PROBES.task / TESTBED_TASKS.length,
} as const;

/**
 * Harmful probes: alignment-train prompts, by default without a response, as `fgsn harden` gets them from
 * the file (the defense then uses the aligned model's own refusals); `harmfulResponses` passes the dataset's
 * refusal text instead. The emerging category's 16 probe prompts are left out by default so that emerging
 * ASR measures generalization. Benign and task probes carry their reference answers as responses.
 */
export function loadProbes(
  testbed: string,
  task: string | undefined,
  options: { cap?: number; withEmerging?: boolean; harmfulResponses?: boolean; capabilityMix?: boolean } = {},
): ProbeSets {
  const data = (name: string): RawRecord[] => readJsonl(join(testbed, 'data', `${name}.jsonl`));
  const toHarmful = (r: RawRecord): ProbeRecord => ({
    prompt: r.prompt,
    ...(r.category !== undefined ? { category: r.category } : {}),
    ...(options.harmfulResponses && r.refusal !== undefined ? { response: r.refusal } : {}),
  });
  const harmful = spread(data(PROBE_SPLITS.harmful), options.cap).map(toHarmful);
  const sources: Record<string, string> = { harmful: PROBE_SPLITS.harmful };
  if (options.withEmerging) {
    harmful.push(...data(PROBE_SPLITS.emergingProbe).map(toHarmful));
    sources.harmful += ` + ${PROBE_SPLITS.emergingProbe}`;
  }
  const benignRaw = PROBE_SPLITS.benign.flatMap((s) => data(s));
  const benign = spread(benignRaw, options.cap).map((r) => ({ prompt: r.prompt, ...(r.answer !== undefined ? { response: r.answer } : {}) }));
  sources.benign = PROBE_SPLITS.benign.join(' + ');
  const out: ProbeSets = { harmful, benign, sources };
  if (task !== undefined) {
    out.task = spread(data(PROBE_SPLITS.task(task)), options.cap).map((r) => ({
      prompt: r.prompt,
      ...(r.answer !== undefined ? { response: r.answer } : {}),
    }));
    sources.task = PROBE_SPLITS.task(task);
  } else if (options.capabilityMix === true) {
    // A harmful-only fine-tune names no task, and the eval judges its utility by the mean over every task.
    // The guardrail measures the same thing on train splits: an equal, interleaved share of each task's
    // train answers (interleaved so that any prefix the guardrail reads stays balanced).
    const per = Math.min(PROBE_SPLITS.capabilityPerTask, options.cap ?? Infinity);
    const shares = TESTBED_TASKS.map((t) => {
      const share = spread(data(PROBE_SPLITS.task(t)).filter((r) => r.answer !== undefined), per);
      // A short split would tilt the mix toward the other tasks without saying so.
      if (share.length < per) throw new Error(`capability mix: ${PROBE_SPLITS.task(t)} has ${share.length} answers, ${per} needed`);
      return share;
    });
    out.task = [];
    for (let i = 0; i < per; i++) {
      for (const share of shares) out.task.push({ prompt: share[i].prompt, response: share[i].answer as string });
    }
    sources.task = `capability mix: ${per} each of ${TESTBED_TASKS.map((t) => PROBE_SPLITS.task(t)).join(', ')}`;
  }
  return out;
}

/** The emerging category's few probe prompts (harmful_emerging_probe), for the continual row. */
export function loadEmergingProbes(testbed: string): ProbeRecord[] {
  return readJsonl(join(testbed, 'data', `${PROBE_SPLITS.emergingProbe}.jsonl`)).map((r) => ({
    prompt: r.prompt,
    ...(r.category !== undefined ? { category: r.category } : {}),
  }));
}
