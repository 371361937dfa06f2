/**
 * Issue 15 item 1: a tenant's `target_modules` regex is never run on a backtracking engine. "(a|a)*b" over
 * 32 "a"s took 15.5 s of the API's event loop with `new RegExp`; re2js matches in time linear in the input.
 * These tests assert results and the engine in use, never wall time (the 20 s guard on the folder test
 * only stops a regression from hanging the suite: the old code needed 15+ s there).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateCheckpointFolder } from '../../src/checkpoint/detect.js';
import { parseAdapterConfig, targetMatcher } from '../../src/checkpoint/lora.js';
import { MAX_TARGET_PATTERN_CHARS, compileTargetModules } from '../../src/checkpoint/target-modules.js';
import type { TensorSource } from '../../src/checkpoint/safetensors-writer.js';
import { FgsnError } from '../../src/errors.js';
import { adapterConfig, tempDir, writeAdapterFolder } from '../checkpoint/fixtures.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  tmp = await tempDir('fgsn-item1-');
});
afterAll(async () => {
  await tmp.cleanup();
});

const EVIL = '(a|a)*b';

describe('target_modules patterns run on a linear-time engine', () => {
  it('compiles a string pattern with re2js and answers (a|a)*b over 32..5000 "a"s correctly', () => {
    const m = compileTargetModules(EVIL, 'adapter_config.json');
    expect(m.engine).toBe('re2js');
    for (const n of [32, 40, 5000]) {
      expect(m.matches('a'.repeat(n))).toBe(false);
      expect(m.matches(`${'a'.repeat(n)}b`)).toBe(true);
    }
  });

  it('parseAdapterConfig keeps the compiled re2js matcher with the config', () => {
    const c = parseAdapterConfig(adapterConfig({ target_modules: EVIL }), 'adapter_config.json');
    expect(targetMatcher(c).engine).toBe('re2js');
    expect(targetMatcher(parseAdapterConfig(adapterConfig(), 'x')).engine).toBe('names');
  });

  it('an uploaded adapter with the hostile pattern and 32-"a" keys is validated (refused as not targeted), not stalled', async () => {
    const dir = join(tmp.dir, 'evil');
    const key = 'a'.repeat(32);
    await writeAdapterFolder(dir, {
      config: adapterConfig({ target_modules: EVIL }),
      mutate: (ts: TensorSource[]) => ts.slice(0, 2).map((t) => ({ ...t, name: t.name.replace('model.layers.0.self_attn.q_proj', key) })),
    });
    const v = await validateCheckpointFolder(dir);
    expect(v.ok).toBe(false);
    if (v.ok) return;
    expect(v.problems.map((p) => p.code)).toEqual(['ADAPTER_TENSOR_INVALID']);
    expect(v.problems[0].message).toContain('is not in target_modules');
  }, 20_000);

  it('a key the hostile pattern does match is accepted by the pattern', async () => {
    const dir = join(tmp.dir, 'evil-ok');
    await writeAdapterFolder(dir, {
      config: adapterConfig({ target_modules: EVIL }),
      mutate: (ts: TensorSource[]) => ts.slice(0, 2).map((t) => ({ ...t, name: t.name.replace('model.layers.0.self_attn.q_proj', `${'a'.repeat(32)}b`) })),
    });
    const v = await validateCheckpointFolder(dir);
    expect(v.ok).toBe(true);
  });
});

describe('bounds and refusals are coded', () => {
  it(`refuses a pattern longer than ${MAX_TARGET_PATTERN_CHARS} characters`, () => {
    const long = `(${'q_proj|'.repeat(200)}v_proj)`;
    expect(long.length).toBeGreaterThan(MAX_TARGET_PATTERN_CHARS);
    expect(() => compileTargetModules(long, 'cfg')).toThrow(expect.objectContaining({ code: 'ADAPTER_TARGET_PATTERN_INVALID' }));
    expect(() => parseAdapterConfig(adapterConfig({ target_modules: long }), 'cfg')).toThrow(FgsnError);
  });

  it('refuses backreferences and lookaround (no linear-time engine runs them) with a coded error', () => {
    for (const p of ['(a)\\1', '(?=q)q_proj', '(?!x).*', '(?<=a)b']) {
      expect(() => compileTargetModules(p, 'cfg'), p).toThrow(expect.objectContaining({ code: 'ADAPTER_TARGET_PATTERN_INVALID' }));
    }
  });

  it('a bad pattern in an uploaded folder is one coded problem', async () => {
    const dir = join(tmp.dir, 'badpattern');
    await writeAdapterFolder(dir, { config: adapterConfig({ target_modules: '(?=x)' }) });
    const v = await validateCheckpointFolder(dir);
    expect(v.ok ? [] : v.problems.map((p) => p.code)).toContain('ADAPTER_TARGET_PATTERN_INVALID');
  });

  it('refuses an oversized list', () => {
    expect(() => parseAdapterConfig(adapterConfig({ target_modules: Array.from({ length: 10_001 }, (_, i) => `m${i}`) }), 'cfg')).toThrow(
      expect.objectContaining({ code: 'ADAPTER_CONFIG_INVALID' }),
    );
  });
});

describe('same answers as before on ordinary patterns (PEFT re.fullmatch semantics)', () => {
  const paths = [
    'model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.0.self_attn.o_proj',
    'model.layers.1.mlp.gate_proj', 'model.layers.1.mlp.up_proj', 'model.layers.12.mlp.down_proj', 'model.layers.3.self_attn.q_proj',
    'q_proj', 'lm_head', 'model.embed_tokens', 'model.layers.10.self_attn.q_proj', 'xq_proj', 'model.layers.0.self_attn.q_proj.x',
  ];
  const patterns = [
    'q_proj', '.*q_proj', '.*\\.(q_proj|v_proj)', 'model\\.layers\\.(0|1)\\.self_attn\\.(q|k|v|o)_proj', '.*layers\\.[0-9]+\\.mlp\\..*',
    '.*(?:gate|up)_proj', '.*\\d\\.self_attn\\.q_proj', '^.*q_proj$', 'model\\.layers\\.\\d{1,2}\\..*_proj', '.*\\.(?:[qkv])_proj',
    'model.layers.1.mlp.up_proj', '.*[^o]_proj', '(model\\.layers\\.([02468]|1[02468])\\.)?self_attn\\.q_proj|lm_head', '.*',
  ];
  /** The matcher this replaces: new RegExp over the whole path. */
  const old = (p: string, path: string): boolean => new RegExp(`^(?:${p})$`).test(path);

  it('string patterns: re2js full match equals the old anchored RegExp on every path', () => {
    for (const p of patterns) {
      const m = compileTargetModules(p, 'cfg');
      for (const path of paths) expect(m.matches(path), `${p} on ${path}`).toBe(old(p, path));
    }
  });

  it('lists: equal name or dotted suffix, as before', () => {
    const lists = [['q_proj', 'v_proj'], ['self_attn.q_proj'], ['model.layers.1.mlp.up_proj'], ['proj'], ['lm_head', 'down_proj']];
    for (const list of lists) {
      const m = compileTargetModules(list, 'cfg');
      for (const path of paths) expect(m.matches(path), `${list.join(',')} on ${path}`).toBe(list.some((t) => path === t || path.endsWith(`.${t}`)));
    }
  });

  it('"all-linear" targets every module but the output head (PEFT)', () => {
    const m = compileTargetModules('all-linear', 'cfg');
    expect(m.matches('model.layers.0.mlp.down_proj')).toBe(true);
    expect(m.matches('lm_head')).toBe(false);
  });

  it('the testbed-style adapter config still validates', async () => {
    const dir = join(tmp.dir, 'plain');
    await writeAdapterFolder(dir, { config: adapterConfig({ target_modules: '.*\\.(q_proj|v_proj|down_proj)' }) });
    expect((await validateCheckpointFolder(dir)).ok).toBe(true);
  });
});
