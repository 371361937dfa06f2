import { readFileSync } from 'node:fs';
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
  if (name === '--version' || name === '-V' || name === 'version') {
    process.stdout.write(`fgsn ${version()} (node ${process.version})\n`);
    return 0;
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

/** package.json's version: src/cli and dist/cli are both two levels below the package root. */
export function version(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** node:util parseArgs rejects unknown flags and bad values with these codes: the caller's mistake. */
const PARSE_ARGS_CODES = new Set(['ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL']);

export function reportError(e: unknown, command?: string): number {
  if (e instanceof Error && PARSE_ARGS_CODES.has((e as NodeJS.ErrnoException).code ?? '')) {
    return reportError(new FgsnError('CLI_USAGE', `${command ? `fgsn ${command}: ` : ''}${e.message}`));
  }
  if (isFgsnError(e)) {
    // A person at a terminal gets the message and the hint as text; pipes and logs keep the JSON.
    if (process.stderr.isTTY === true && e.code === 'CLI_USAGE') process.stderr.write(`fgsn${command ? ` ${command}` : ''}: ${e.message}\n${e.hint ? `hint: ${e.hint}\n` : ''}`);
    else process.stderr.write(JSON.stringify({ error: e.toJSON() }) + '\n');
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
