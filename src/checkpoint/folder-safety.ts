/**
 * Keeps every file a checkpoint folder points at inside that folder, and recognises pickle files so they
 * are refused by name without ever being opened (unpickling runs arbitrary code).
 */
import { readdir, realpath } from 'node:fs/promises';
import { isAbsolute, join, sep } from 'node:path';
import { FgsnError } from '../errors.js';
import { errnoCode, ioError } from './io.js';

/** Names of PyTorch pickle checkpoints (and their shard indexes), as transformers and peft save them. */
const PICKLE_PATTERN = /\.(bin|pt|pth|pkl|pickle|ckpt)$|^pytorch_model\.bin\.index\.json$/i;

export function isPickleName(name: string): boolean {
  return PICKLE_PATTERN.test(name);
}

export async function listFolder(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (e) {
    throw ioError(dir, e);
  }
}

export function pickleRefused(dir: string, names: string[]): FgsnError {
  return new FgsnError(
    'CHECKPOINT_PICKLE_REFUSED',
    `${dir}: only pickle weights found (${names.join(', ')}); they are never loaded. Convert the checkpoint to safetensors ` +
      '(e.g. model.save_pretrained(out, safe_serialization=True)) and upload that.',
    { details: { dir, files: names } },
  );
}

/**
 * Resolves `name` (as written in an index or config) inside `realDir`, which must itself be a realpath.
 * Refuses absolute names, '..' segments and symlinks whose target lies outside the folder; returns the
 * real path to open, or null when the file does not exist (the caller decides which error that is).
 */
export async function confinedPath(realDir: string, name: string, dirForMessages: string): Promise<string | null> {
  const unsafe = (why: string): FgsnError =>
    new FgsnError('CHECKPOINT_PATH_UNSAFE', `${dirForMessages}: file name "${name}" ${why}`, { details: { dir: dirForMessages, name } });
  if (name.length === 0 || name.includes('\0')) throw unsafe('is empty or contains a NUL byte');
  if (isAbsolute(name) || /^[a-zA-Z]:[\\/]/.test(name) || name.startsWith('\\')) throw unsafe('is an absolute path');
  if (name.split(/[\\/]/).some((seg) => seg === '..')) throw unsafe('contains ".."');
  let real: string;
  try {
    real = await realpath(join(realDir, name));
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw ioError(join(dirForMessages, name), e);
  }
  if (!real.startsWith(realDir + sep)) throw unsafe(`resolves to ${real}, outside the folder (symlink)`);
  return real;
}

export async function realDirectory(dir: string): Promise<string> {
  try {
    return await realpath(dir);
  } catch (e) {
    throw ioError(dir, e);
  }
}
