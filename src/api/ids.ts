import { randomBytes } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** Opaque, unguessable resource ids (`ckpt_…`, `job_…`): 120 random bits, lower-case base32. */
export function newId(prefix: 'ckpt' | 'ref' | 'probes' | 'job'): string {
  const bytes = randomBytes(15);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return `${prefix}_${out}`;
}

/** Ids as they appear in URLs: anything else is a 404 without touching storage. */
export const ID_PATTERN = /^[a-z]+_[a-z2-7]{24}$|^default-[a-z]+$/;
