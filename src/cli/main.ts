import { FgsnError, isFgsnError } from '../errors.js';
import { COMMANDS } from './commands.js';

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return ['usage: fgsn <command> [options]', '', 'commands:', ...lines, '', 'Run `fgsn <command> --help` for options.'].join('\n');
}

/** Runs one CLI invocation; returns the exit status (0 ok, 1 internal failure, 2 bad input or usage). */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    process.stderr.write(`fgsn: unknown command "${name}"\n\n${usage()}\n`);
    return 2;
  }
  try {
    const mod = await command.load();
    return await mod.run(rest);
  } catch (e) {
    return reportError(e, name);
  }
}

/** node:util parseArgs rejects unknown flags and bad values with these codes: the caller's mistake. */
const PARSE_ARGS_CODES = new Set(['ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL']);

export function reportError(e: unknown, command?: string): number {
  if (e instanceof Error && PARSE_ARGS_CODES.has((e as NodeJS.ErrnoException).code ?? '')) {
    return reportError(new FgsnError('CLI_USAGE', `${command ? `fgsn ${command}: ` : ''}${e.message}`));
  }
  if (isFgsnError(e)) {
    process.stderr.write(JSON.stringify({ error: e.toJSON() }) + '\n');
    return e.isUserError ? 2 : 1;
  }
  const err = new FgsnError('INTERNAL', e instanceof Error ? e.message : String(e));
  process.stderr.write(JSON.stringify({ error: err.toJSON() }) + '\n');
  if (e instanceof Error && e.stack && process.env.FGSN_DEBUG) process.stderr.write(e.stack + '\n');
  return 1;
}

const isEntry = process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isEntry) {
  process.exitCode = await main(process.argv.slice(2));
}
