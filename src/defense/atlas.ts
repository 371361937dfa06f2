/**
 * The safety atlas: what the aligned model alone says about safety, per probe set, computed once and cached
 * under cacheDir/atlas/<id> (id = sha256 of the aligned weights, its config, the probes and the options):
 * the layer curve and weights, the aligned model's own responses to the harmful probes (refusals, the
 * attribution target), per-input-feature activation energy on harmful (prompt + response) and benign
 * tokens, per-row harmful-probe Wanda scores, and per harm category k-means sub-clusters of the last-token
 * hidden states at the safety band's last layer.
 *
 * Atlases share the engine cache's bound (FGSN_CACHE_MAX_BYTES over <cacheDir>/engine and <cacheDir>/atlas,
 * least recently used first): one found or built here is touched and held by this process (cache-lifecycle.ts).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { linearWeightNames, ModelCheckpoint, parameterCount, SafetensorsFile, type ModelSpec, type TensorSource, writeSafetensors } from '../checkpoint/index.js';
import { enforceCacheBound, holdEntry, loadEngine, type RowsCapture, type SequenceCapture } from '../engine/index.js';
import { FgsnError } from '../errors.js';
import type { ProbeRecord } from '../probes.js';
import { releaseBuffer, sha256Text } from '../util/index.js';
import { kmeans } from './math/kmeans.js';
import { layerCurve, layerWeights, selectBand, type LayerCurve } from './math/layers.js';
import { normsFromSquareSums, wandaRowScores } from './math/scores.js';
import { checkpointHashes, readMat } from './io/sources.js';

/**
 * Sequences per run of the square-sum captures (prompt + response, so the longest runs of the atlas). The
 * run's activations grow with it: measured on the 125M bench trio (16 prompts + 40-token responses), batch 32
 * added ~0.27 GB over the session (3.4x the checkpoint in all), batch 8 ~0.1 GB (2.85x), at the same speed.
 */
export const SQSUM_BATCH = 8;

export const ATLAS_VERSION = 1;

export interface AtlasOptions {
  /** Share of layer weight the default safety band holds (clusters are taken at its last layer). */
  bandShare?: number;
  /** Sub-clusters per harm category (fewer when a category has few probes). */
  clustersPerCategory?: number;
  maxNewTokens?: number;
  executionProvider?: 'cpu' | 'cuda';
  /** Engine graph cache (default: <cacheDir>/engine). */
  engineCacheDir?: string;
}

export interface AtlasCategory {
  name: string;
  /** Indices into the atlas' harmful probes. */
  probes: number[];
  clusterLayer: number;
  clusters: { size: number; members: number[] }[];
}

export interface AtlasMeta {
  id: string;
  version: number;
  createdAt: string;
  aligned: { dir: string; sha256: Record<string, string> };
  options: Required<Omit<AtlasOptions, 'executionProvider' | 'engineCacheDir'>>;
  harmful: ProbeRecord[];
  benign: ProbeRecord[];
  /** The aligned model's response to each harmful probe (the probe's own when given). */
  harmfulResponses: string[];
  curve: LayerCurve;
  layerWeights: number[];
  band: number[];
  categories: AtlasCategory[];
  tokens: { harmful: number; benign: number };
  seconds: Record<string, number>;
  /** Atlas this one extends (continual: a category added). */
  parent?: string;
}

export interface Atlas extends AtlasMeta {
  dir: string;
  /** Per linear weight [dIn]: sum of squared inputs over harmful prompt+response tokens / benign prompt tokens. */
  harmfulSqSums: Map<string, Float32Array>;
  benignSqSums: Map<string, Float32Array>;
  /** Per linear weight [dOut]: sum_j |W_ij| ||X_H,j|| (raw; normalise with normaliseRowScores). */
  wanda: Map<string, Float32Array>;
}

const defaults = (o: AtlasOptions): AtlasMeta['options'] => ({
  bandShare: o.bandShare ?? 0.6,
  clustersPerCategory: o.clustersPerCategory ?? 2,
  maxNewTokens: o.maxNewTokens ?? 40,
});

export async function atlasId(alignedSha: Record<string, string>, config: string, harmful: ProbeRecord[], benign: ProbeRecord[], options: AtlasMeta['options']): Promise<string> {
  return sha256Text(JSON.stringify({ v: ATLAS_VERSION, alignedSha, config, harmful, benign, options })).slice(0, 32);
}

/** Returns the cached atlas for these inputs, building it when missing. */
export async function getOrBuildAtlas(
  alignedDir: string,
  harmful: ProbeRecord[],
  benign: ProbeRecord[],
  cacheDir: string,
  opts: AtlasOptions = {},
  onStep?: (msg: string) => void | Promise<void>,
): Promise<{ atlas: Atlas; cached: boolean }> {
  const options = defaults(opts);
  const ck = await ModelCheckpoint.open(alignedDir);
  let sha: Record<string, string>;
  const spec = ck.spec;
  try {
    sha = await checkpointHashes(ck);
  } finally {
    await ck.close();
  }
  const config = await readFile(join(alignedDir, 'config.json'), 'utf8');
  const id = await atlasId(sha, config, harmful, benign, options);
  const dir = join(cacheDir, 'atlas', id);
  if (holdAtlas(dir)) {
    try {
      return { atlas: await loadAtlas(dir), cached: true };
    } catch (e) {
      if (!(e instanceof FgsnError && e.code === 'ATLAS_NOT_FOUND')) throw e;
    }
  }
  const atlas = await buildAtlas(alignedDir, spec, sha, id, harmful, benign, cacheDir, options, opts, onStep);
  if (holdAtlas(dir)) enforceCacheBound(join(cacheDir, 'atlas'));
  return { atlas, cached: false };
}

/**
 * Largest share of the parameters (so of the float32 weights) an untied lm_head may be for the captures to run on generation's graph
 * (EngineOptions.rowsCapture), which holds it where a capture graph does not. On the 125M bench trio (lm_head
 * 18 % of the float32 weights) sharing raised the atlas' peak from 685 to 780 MB (2.68x -> 3.05x the
 * checkpoint); on the 1.1B trio (6 %) the peak stayed within run-to-run noise (4.81-4.87 GiB) and the shared
 * session saved a 3 s build (docs/scale.md).
 */
export const SHARED_GRAPH_MAX_HEAD_SHARE = 0.1;

/** What the atlas engine's generation graph also outputs (see SHARED_GRAPH_MAX_HEAD_SHARE). */
export function atlasRowsCapture(spec: ModelSpec): RowsCapture {
  const head = spec.tieWordEmbeddings ? 0 : spec.vocabSize * spec.hiddenSize;
  // The last hidden states always: generation's prefill computes them for the prompts' own capture.
  return head <= SHARED_GRAPH_MAX_HEAD_SHARE * parameterCount(spec) ? { hidden: 'last', inputSquareSums: true } : { hidden: 'last' };
}

async function buildAtlas(
  alignedDir: string,
  spec: ModelSpec,
  sha: Record<string, string>,
  id: string,
  harmful: ProbeRecord[],
  benign: ProbeRecord[],
  cacheDir: string,
  options: AtlasMeta['options'],
  opts: AtlasOptions,
  onStep?: (msg: string) => void | Promise<void>,
): Promise<Atlas> {
  if (harmful.length < 1) throw new FgsnError('PROBES_EMPTY', 'the atlas needs harmful probes');
  if (benign.length < 2) throw new FgsnError('PROBES_EMPTY', 'the atlas needs at least two benign probes');
  const seconds: Record<string, number> = {};
  let t = performance.now();
  const lap = (k: string): void => {
    seconds[k] = (performance.now() - t) / 1000;
    t = performance.now();
  };
  const engine = await loadEngine(alignedDir, {
    cacheDir: opts.engineCacheDir ?? join(cacheDir, 'engine'),
    // The harmful prompts' last hidden states come from generation's prefill instead of a forward of their own,
    // and where the untied lm_head is small the captures share generation's graph (one session build; on the
    // 1.1B bench trio a second graph cost a 3 s build and the prompts' forward ~2 s, docs/scale.md).
    maxSessions: 1,
    rowsCapture: atlasRowsCapture(spec),
    ...(opts.executionProvider ? { executionProvider: opts.executionProvider } : {}),
  });
  let harmfulResponses: string[];
  let hCap: Awaited<ReturnType<typeof engine.capture>>;
  let bCap: Awaited<ReturnType<typeof engine.capture>>;
  let hLast: Awaited<ReturnType<typeof engine.capture>>;
  try {
    await onStep?.('generating the aligned model\'s responses to the harmful probes');
    const missing = harmful.map((p, i) => (p.response === undefined ? i : -1)).filter((i) => i >= 0);
    const gens = missing.length > 0
      ? await engine.generate(missing.map((i) => harmful[i].prompt), { maxNewTokens: options.maxNewTokens, batchSize: 32, hidden: 'last' })
      : [];
    harmfulResponses = harmful.map((p) => p.response ?? '');
    missing.forEach((i, k) => (harmfulResponses[i] = gens[k].text));
    lap('generate');
    await onStep?.('capturing activations');
    // One graph variant for the captures (generation's where shared), each reading what it needs.
    const what = { hidden: 'last', inputSquareSums: true } as const;
    // The prompts generation ran have their last hidden states from its prefill; the others (probes given with a
    // response) are captured with `what`, the variant the captures below use anyway (never an extra build).
    const given = harmful.map((p, i) => (p.response !== undefined ? i : -1)).filter((i) => i >= 0);
    const capGiven = given.length > 0 ? await engine.capture(given.map((i) => harmful[i].prompt), what, { batchSize: 32 }) : null;
    const lastOf = new Map<number, SequenceCapture>();
    missing.forEach((i, k) => lastOf.set(i, { ids: gens[k].promptIds, promptLength: gens[k].promptIds.length, hidden: gens[k].promptHidden! }));
    given.forEach((i, k) => lastOf.set(i, capGiven!.sequences[k]));
    hLast = { sequences: harmful.map((_, i) => lastOf.get(i)!) };
    bCap = await engine.capture(benign.map((p) => p.prompt), what, {
      batchSize: SQSUM_BATCH,
      ...(benign.every((p) => p.response !== undefined) ? { responses: benign.map((p) => p.response!) } : {}),
    });
    hCap = await engine.capture(harmful.map((p) => p.prompt), what, { batchSize: SQSUM_BATCH, responses: harmfulResponses });
    lap('capture');
  } finally {
    await engine.close();
  }
  const L = engine.spec.numLayers;
  const byLayer = (c: typeof bCap): Float32Array[][] => Array.from({ length: L }, (_, l) => c.sequences.map((s) => s.hidden![l]));
  const curve = layerCurve(byLayer(bCap), byLayer(hLast));
  const weights = layerWeights(curve.gap);
  const band = selectBand(weights, options.bandShare);
  const clusterLayer = band[band.length - 1];
  const catNames = [...new Set(harmful.map((p) => p.category ?? 'uncategorized'))].sort();
  const categories: AtlasCategory[] = catNames.map((name) => {
    const probes = harmful.map((p, i) => ((p.category ?? 'uncategorized') === name ? i : -1)).filter((i) => i >= 0);
    const k = Math.max(1, Math.min(options.clustersPerCategory, Math.floor(probes.length / 4)));
    const km = kmeans(probes.map((i) => hLast.sequences[i].hidden![clusterLayer]), k, 1);
    const clusters = km.sizes.map((size, j) => ({ size, members: probes.filter((_, m) => km.assignment[m] === j) }));
    return { name, probes, clusterLayer, clusters };
  });
  const harmfulSqSums = hCap.inputSquareSums!;
  const benignSqSums = bCap.inputSquareSums!;
  const wanda = new Map<string, Float32Array>();
  const ck = await ModelCheckpoint.open(alignedDir);
  const names = linearWeightNames(ck.spec);
  // One float32 buffer of the largest matrix's size for every matrix in turn, freed at the end.
  const scratch = new Float32Array(Math.max(...names.map((n) => ck.tensor(n).shape[0] * ck.tensor(n).shape[1])));
  try {
    for (const name of names) {
      wanda.set(name, wandaRowScores(await readMat(ck, name, scratch), normsFromSquareSums(harmfulSqSums.get(name)!)));
    }
  } finally {
    releaseBuffer(scratch);
    await ck.close();
  }
  lap('scores');
  const meta: AtlasMeta = {
    id, version: ATLAS_VERSION, createdAt: new Date().toISOString(),
    aligned: { dir: alignedDir, sha256: sha }, options, harmful, benign, harmfulResponses, curve, layerWeights: weights, band, categories,
    tokens: { harmful: hCap.squareSumTokenCount ?? 0, benign: bCap.squareSumTokenCount ?? 0 }, seconds,
  };
  const dir = join(cacheDir, 'atlas', id);
  await saveAtlas(dir, meta, harmfulSqSums, benignSqSums, wanda);
  return { ...meta, dir, harmfulSqSums, benignSqSums, wanda };
}

async function saveAtlas(dir: string, meta: AtlasMeta, h: Map<string, Float32Array>, b: Map<string, Float32Array>, wanda: Map<string, Float32Array>): Promise<void> {
  // Built in a sibling folder and renamed: concurrent jobs either see a whole atlas or none.
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await mkdir(tmp, { recursive: true });
  const tensors: TensorSource[] = [];
  const add = (name: string, v: Float32Array): void => {
    tensors.push({ name, dtype: 'F32', shape: [v.length], data: () => new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });
  };
  for (const [n, v] of h) add(`${n}.harmful_sqsum`, v);
  for (const [n, v] of b) add(`${n}.benign_sqsum`, v);
  for (const [n, v] of wanda) add(`${n}.wanda`, v);
  await writeSafetensors(join(tmp, 'stats.safetensors'), tensors, { 'fgsn.atlas': meta.id });
  await writeFile(join(tmp, 'atlas.json'), JSON.stringify(meta, null, 1) + '\n');
  try {
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    // Another job finished the same atlas first: theirs is identical by construction.
    if (!(await exists(join(dir, 'atlas.json')))) throw e;
  }
}

/** Holds (and touches) a complete atlas folder so no other process evicts it while this one reads it. */
function holdAtlas(dir: string): boolean {
  try {
    return holdEntry(dir, (d) => existsSync(join(d, 'atlas.json'))) !== null;
  } catch {
    return false; // no cache folder yet
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

export async function loadAtlas(dir: string): Promise<Atlas> {
  if (!(await exists(join(dir, 'atlas.json')))) throw new FgsnError('ATLAS_NOT_FOUND', `no atlas at ${dir}`, { details: { dir } });
  const meta = JSON.parse(await readFile(join(dir, 'atlas.json'), 'utf8')) as AtlasMeta;
  if (meta.version !== ATLAS_VERSION) throw new FgsnError('ATLAS_NOT_FOUND', `atlas ${dir} has version ${meta.version}, this build reads ${ATLAS_VERSION}`);
  const f = await SafetensorsFile.open(join(dir, 'stats.safetensors'));
  const harmfulSqSums = new Map<string, Float32Array>();
  const benignSqSums = new Map<string, Float32Array>();
  const wanda = new Map<string, Float32Array>();
  try {
    for (const n of f.names()) {
      const v = (await f.readF32(n)).slice();
      if (n.endsWith('.harmful_sqsum')) harmfulSqSums.set(n.slice(0, -'.harmful_sqsum'.length), v);
      else if (n.endsWith('.benign_sqsum')) benignSqSums.set(n.slice(0, -'.benign_sqsum'.length), v);
      else if (n.endsWith('.wanda')) wanda.set(n.slice(0, -'.wanda'.length), v);
    }
  } finally {
    await f.close();
  }
  return { ...meta, dir, harmfulSqSums, benignSqSums, wanda };
}

/** Finds an atlas by id (or unique id prefix) in the cache. */
export async function findAtlas(cacheDir: string, id: string): Promise<Atlas> {
  const root = join(cacheDir, 'atlas');
  const names = (await exists(root)) ? (await readdir(root)).filter((n) => !n.includes('.tmp-') && n.startsWith(id)) : [];
  if (names.length !== 1) {
    throw new FgsnError('ATLAS_NOT_FOUND', names.length === 0 ? `no atlas "${id}" under ${root}` : `atlas id "${id}" is ambiguous (${names.length} matches)`, { details: { id } });
  }
  holdAtlas(join(root, names[0]));
  return loadAtlas(join(root, names[0]));
}

export async function listAtlases(cacheDir: string): Promise<{ id: string; aligned: string; harmful: number; benign: number; categories: string[]; createdAt: string }[]> {
  const root = join(cacheDir, 'atlas');
  if (!(await exists(root))) return [];
  const out = [];
  for (const n of (await readdir(root)).sort()) {
    if (n.includes('.tmp-')) continue;
    try {
      const m = JSON.parse(await readFile(join(root, n, 'atlas.json'), 'utf8')) as AtlasMeta;
      out.push({ id: m.id, aligned: m.aligned.dir, harmful: m.harmful.length, benign: m.benign.length, categories: m.categories.map((c) => c.name), createdAt: m.createdAt });
    } catch {
      // a foreign or broken entry is not an atlas; listing goes on
    }
  }
  return out;
}

/**
 * Continual: the atlas for the same aligned model and benign probes with a new category's probes added
 * (built, or found in the cache, like any atlas; it records the atlas it extends).
 */
export async function addCategory(
  parent: Atlas,
  probes: ProbeRecord[],
  category: string,
  cacheDir: string,
  opts: AtlasOptions = {},
): Promise<{ atlas: Atlas; cached: boolean }> {
  const added = probes.map((p) => ({ ...p, category }));
  const harmful = [...parent.harmful.map((p, i) => ({ ...p, response: p.response ?? parent.harmfulResponses[i] })), ...added];
  const r = await getOrBuildAtlas(parent.aligned.dir, harmful, parent.benign, cacheDir, { ...parent.options, ...opts });
  if (r.atlas.parent === undefined) {
    r.atlas.parent = parent.id;
    const { dir, harmfulSqSums: _h, benignSqSums: _b, wanda: _w, ...meta } = r.atlas;
    await writeFile(join(dir, 'atlas.json'), JSON.stringify(meta, null, 1) + '\n');
  }
  return r;
}

/** A compact, printable view (`fgsn atlas show`). */
export function summarizeAtlas(a: Atlas, topRows = 5): Record<string, unknown> {
  const top: Record<string, number[]> = {};
  for (const [name, s] of a.wanda) {
    const idx = Array.from(s.keys()).sort((x, y) => s[y] - s[x]).slice(0, topRows);
    top[name] = idx;
  }
  return {
    id: a.id, version: a.version, createdAt: a.createdAt, parent: a.parent ?? null, aligned: a.aligned, options: a.options,
    probes: { harmful: a.harmful.length, benign: a.benign.length },
    refusalsSample: a.harmfulResponses.slice(0, 3),
    curve: a.curve, layerWeights: a.layerWeights, band: a.band,
    categories: a.categories.map((c) => ({ name: c.name, probes: c.probes.length, clusterLayer: c.clusterLayer, clusters: c.clusters.map((k) => k.size) })),
    tokens: a.tokens, seconds: a.seconds,
    topWandaRows: top,
  };
}
