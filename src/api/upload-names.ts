import { isPickleName } from '../checkpoint/index.js';
import { FgsnError } from '../errors.js';

/**
 * A file of an upload is one flat name inside the upload folder: no separators, no `..`, no NUL, nothing
 * hidden (temp files start with '.'), nothing absolute. Pickle weights are refused by name, before a byte
 * is stored.
 */
export function checkUploadName(name: string): void {
  const unsafe =
    name.length === 0 ||
    name.length > 255 ||
    name.includes('/') ||
    name.includes('\\') ||
    name.includes('\0') ||
    name.startsWith('.') ||
    // eslint-disable-next-line no-control-regex
    /[\x00-\x1f\x7f]/.test(name) ||
    // Bidi and invisible format characters make a name display as another (e.g. U+202E: "evil\u202Egnp.json").
    /[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/.test(name) ||
    /^[A-Za-z]:/.test(name);
  if (unsafe) {
    throw new FgsnError('CHECKPOINT_PATH_UNSAFE', `file name ${JSON.stringify(name)} is not allowed: use a plain name with no "/", "\\", "..", NUL or leading "."`, {
      details: { name },
    });
  }
  if (isPickleName(name)) {
    throw new FgsnError('CHECKPOINT_PICKLE_REFUSED', `file ${name} is a pickle checkpoint; it is never loaded. Convert it to safetensors and upload that`, {
      details: { name },
    });
  }
}
