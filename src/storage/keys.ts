import { FgsnError } from '../errors.js';

/** Keys are relative, `/`-separated, with no empty, `.` or `..` segments: no backend can be led outside its root. */
export function assertSafeKey(key: string): void {
  const segments = key.split('/');
  const bad =
    key.length === 0 ||
    key.length > 1024 ||
    key.includes('\0') ||
    key.includes('\\') ||
    segments.some((s) => s === '' || s === '.' || s === '..');
  if (bad) throw new FgsnError('STORAGE_ERROR', `storage key "${key}" is not a safe relative key`);
}
