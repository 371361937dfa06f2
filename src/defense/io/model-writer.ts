/**
 * Writes a hardened model folder that HF loads unchanged: the source's config/tokenizer files, and its
 * safetensors files under the same names and sharding (index copied), every tensor byte-for-byte except the
 * rows a row diff overwrites.
 */
import { copyFile, mkdir, readdir, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { ModelCheckpoint, SafetensorsFile, WriteResult } from '../../checkpoint/index.js';
import { writeSafetensors } from '../../checkpoint/index.js';
import type { RowDiff } from './row-diff.js';

/** Files copied beside the weights: configs, tokenizer files, chat templates (never weights or pickles). */
export function isCopiedConfigFile(name: string): boolean {
  if (name === 'model.safetensors.index.json' || name === 'adapter_config.json' || name === 'fgsn-report.json') return false;
  return /\.(json|jinja|model|txt|tiktoken)$/.test(name) && !/\.(bin|pt|pth|pkl|safetensors)$/.test(name);
}

export async function copyConfigFiles(fromDir: string, toDir: string): Promise<string[]> {
  const copied: string[] = [];
  for (const name of (await readdir(fromDir)).sort()) {
    if (!isCopiedConfigFile(name)) continue;
    if (!(await stat(join(fromDir, name))).isFile()) continue;
    await copyFile(join(fromDir, name), join(toDir, name));
    copied.push(name);
  }
  return copied;
}

/**
 * `hashes`, when given, receives each weight file written (its path) with its size and the sha256 of the bytes
 * as written, so a caller listing its artifacts does not read gigabytes back to hash them.
 */
export async function writeModelFolder(
  layout: ModelCheckpoint, configDir: string, diff: RowDiff | null, outDir: string, hashes?: Map<string, WriteResult>,
): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const written = await copyConfigFiles(configDir, outDir);
  const files = new Map<string, SafetensorsFile>();
  for (const name of layout.names()) {
    const f = layout.file(name);
    files.set(f.path, f);
  }
  for (const [path, f] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    const out = join(outDir, basename(path));
    const w = await writeSafetensors(
      out,
      f.names().map((name) => {
        const t = f.tensor(name);
        return {
          name, dtype: t.dtype, shape: [...t.shape],
          data: async () => {
            const bytes = await f.readBytes(name);
            return diff ? diff.splice(name, bytes, t.shape, t.dtype) : bytes;
          },
        };
      }),
      f.metadata,
    );
    hashes?.set(resolve(out), w);
    written.push(basename(path));
  }
  if (layout.sharded) {
    await copyFile(join(layout.dir, 'model.safetensors.index.json'), join(outDir, 'model.safetensors.index.json'));
    written.push('model.safetensors.index.json');
  }
  return written;
}
