/**
 * Imports a sibling module that may not be part of this build (the defense pipeline lands separately).
 * Only "this very module is missing" yields undefined; a module that exists but fails to load is an error.
 */
export async function importIfPresent<T>(specifier: string, base: string): Promise<T | undefined> {
  const url = new URL(specifier, base);
  try {
    return (await import(url.href)) as T;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { url?: string };
    const missing = err.code === 'ERR_MODULE_NOT_FOUND' && err.message.includes(url.pathname.replace(/\.js$/, ''));
    if (missing) return undefined;
    throw e;
  }
}
