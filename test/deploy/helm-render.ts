/**
 * A small, strict renderer for the subset of Go templates + Sprig/Helm functions that helm/fgsn uses, so the
 * chart can be rendered and checked where no helm binary exists (here and in CI).
 *
 * Strict on purpose: an unknown function, a missing map key, comparing an int with a float, or printing a
 * map are errors here (helm would render "<no value>", "map[...]" or fail only at install time). Values
 * from values.yaml are float64 as in helm (numbers from YAML go through JSON there), so printing a large
 * number without `int` renders "6.8719476736e+10" exactly as helm would: the tests catch that bug class.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';

// ----------------------------------------------------------------------------------------------------------
// Values

/** A Go int (template literals, `int`, `add`...) as opposed to a float64 from values. */
type GoValue = string | number | bigint | boolean | null | GoValue[] | { [k: string]: GoValue };
type Dict = { [k: string]: GoValue };

function isDict(v: unknown): v is Dict {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Go's %v for float64: shortest digits, exponent form when exp < -4 or exp >= 6 (strconv 'g', prec -1). */
export function goFloat(x: number): string {
  if (!Number.isFinite(x)) return x > 0 ? '+Inf' : x < 0 ? '-Inf' : 'NaN';
  if (x === 0) return '0';
  const [mant, expText] = x.toExponential().split('e');
  const exp = Number(expText);
  if (exp < -4 || exp >= 6) {
    return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  return String(x);
}

function format(v: GoValue, where: string): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return goFloat(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  throw new Error(`${where}: printing a ${Array.isArray(v) ? 'list' : 'map'} (${JSON.stringify(v)}); use toYaml`);
}

function truthy(v: GoValue): boolean {
  if (v === null || v === undefined || v === false || v === '' || v === 0 || v === 0n) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isDict(v)) return Object.keys(v).length > 0;
  return true;
}

function toInt(v: GoValue, where: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(Math.trunc(v));
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return BigInt(v);
  if (typeof v === 'boolean') return v ? 1n : 0n;
  if (v === null) return 0n;
  throw new Error(`${where}: cannot convert ${JSON.stringify(v)} to int`);
}

function kind(v: GoValue): string {
  if (v === null) return 'nil';
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'number') return 'float';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  return Array.isArray(v) ? 'list' : 'map';
}

function compare(a: GoValue, b: GoValue, op: string, where: string): number {
  const ka = kind(a);
  const kb = kind(b);
  if (ka !== kb) throw new Error(`${where}: ${op}: incompatible types for comparison (${ka} and ${kb})`);
  if (ka === 'list' || ka === 'map') throw new Error(`${where}: ${op}: cannot compare ${ka}s`);
  if (a === b) return 0;
  return (a as string | number | bigint) < (b as string | number | bigint) ? -1 : 1;
}

function goQuote(s: string): string {
  return JSON.stringify(s);
}

function toYaml(v: GoValue): string {
  const plain = JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x)));
  if (plain === null) return 'null';
  // Go's yaml writes block sequences unindented under their key and does not fold long strings.
  return YAML.stringify(plain, { indentSeq: false, lineWidth: 0 }).replace(/\n$/, '');
}

// ----------------------------------------------------------------------------------------------------------
// Lexing and parsing

type Token =
  | { t: 'str'; v: string }
  | { t: 'num'; v: GoValue }
  | { t: 'field'; path: string[] } // .a.b, or "." when path is empty
  | { t: 'var'; name: string; path: string[] } // $x.a.b
  | { t: 'ident'; v: string }
  | { t: 'op'; v: '(' | ')' | '|' | ':=' | '=' | ',' };

interface Pipeline {
  decl?: { names: string[]; assign: boolean };
  cmds: Operand[][];
}

type Operand =
  | { k: 'lit'; v: GoValue }
  | { k: 'field'; path: string[] }
  | { k: 'var'; name: string; path: string[] }
  | { k: 'fn'; name: string }
  | { k: 'sub'; pipe: Pipeline };

type Node =
  | { n: 'text'; v: string }
  | { n: 'out'; pipe: Pipeline; src: string }
  | { n: 'if'; branches: { pipe: Pipeline; body: Node[] }[]; otherwise: Node[] }
  | { n: 'range'; pipe: Pipeline; body: Node[]; otherwise: Node[]; src: string }
  | { n: 'with'; pipe: Pipeline; body: Node[]; otherwise: Node[] }
  | { n: 'template'; name: string; pipe?: Pipeline };

function lexAction(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const pathAt = (start: number): [string[], number] => {
    const path: string[] = [];
    let j = start;
    while (src[j] === '.' && /[A-Za-z_]/.test(src[j + 1] ?? '')) {
      let k = j + 1;
      while (/[A-Za-z0-9_]/.test(src[k] ?? '')) k++;
      path.push(src.slice(j + 1, k));
      j = k;
    }
    return [path, j];
  };
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"') {
      let j = i + 1;
      let s = '';
      while (src[j] !== '"') {
        if (j >= src.length) throw new Error(`unterminated string in {{${src}}}`);
        if (src[j] === '\\') {
          const e = src[j + 1];
          s += e === 'n' ? '\n' : e === 't' ? '\t' : e;
          j += 2;
        } else s += src[j++];
      }
      out.push({ t: 'str', v: s });
      i = j + 1;
    } else if (c === '`') {
      const j = src.indexOf('`', i + 1);
      if (j < 0) throw new Error(`unterminated raw string in {{${src}}}`);
      out.push({ t: 'str', v: src.slice(i + 1, j) });
      i = j + 1;
    } else if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(src[i + 1] ?? ''))) {
      let j = i + 1;
      while (/[0-9.]/.test(src[j] ?? '')) j++;
      const text = src.slice(i, j);
      out.push({ t: 'num', v: text.includes('.') ? Number(text) : BigInt(text) });
      i = j;
    } else if (c === '.') {
      const [path, j] = pathAt(i);
      out.push({ t: 'field', path });
      i = path.length === 0 ? i + 1 : j;
    } else if (c === '$') {
      let j = i + 1;
      while (/[A-Za-z0-9_]/.test(src[j] ?? '')) j++;
      const name = src.slice(i, j);
      const [path, k] = pathAt(j);
      out.push({ t: 'var', name, path });
      i = k;
    } else if (c === ':' && src[i + 1] === '=') {
      out.push({ t: 'op', v: ':=' });
      i += 2;
    } else if (c === '(' || c === ')' || c === '|' || c === '=' || c === ',') {
      out.push({ t: 'op', v: c });
      i++;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (/[A-Za-z0-9_]/.test(src[j] ?? '')) j++;
      out.push({ t: 'ident', v: src.slice(i, j) });
      i = j;
    } else {
      throw new Error(`unexpected "${c}" in {{${src}}}`);
    }
  }
  return out;
}

function parsePipeline(tokens: Token[], src: string): Pipeline {
  let pos = 0;
  const peek = (): Token | undefined => tokens[pos];
  const parse = (): Pipeline => {
    const pipe: Pipeline = { cmds: [] };
    // Declaration: $x := ..., $k, $v := ..., $x = ...
    const save = pos;
    const names: string[] = [];
    while (peek()?.t === 'var' && (peek() as { path: string[] }).path.length === 0) {
      names.push((tokens[pos++] as { name: string }).name);
      const nx = peek();
      if (nx?.t === 'op' && nx.v === ',') {
        pos++;
        continue;
      }
      break;
    }
    const op = peek();
    if (names.length > 0 && op?.t === 'op' && (op.v === ':=' || op.v === '=')) {
      pos++;
      pipe.decl = { names, assign: op.v === '=' };
    } else {
      pos = save;
    }
    let cmd: Operand[] = [];
    while (pos < tokens.length) {
      const tok = tokens[pos];
      if (tok.t === 'op' && tok.v === ')') break;
      pos++;
      if (tok.t === 'op' && tok.v === '|') {
        if (cmd.length === 0) throw new Error(`empty command in {{${src}}}`);
        pipe.cmds.push(cmd);
        cmd = [];
      } else if (tok.t === 'op' && tok.v === '(') {
        const inner = parse();
        const close = tokens[pos++];
        if (close?.t !== 'op' || close.v !== ')') throw new Error(`missing ) in {{${src}}}`);
        cmd.push({ k: 'sub', pipe: inner });
      } else if (tok.t === 'str' || tok.t === 'num') {
        cmd.push({ k: 'lit', v: tok.v });
      } else if (tok.t === 'field') {
        cmd.push({ k: 'field', path: tok.path });
      } else if (tok.t === 'var') {
        cmd.push({ k: 'var', name: tok.name, path: tok.path });
      } else if (tok.t === 'ident') {
        if (tok.v === 'true' || tok.v === 'false') cmd.push({ k: 'lit', v: tok.v === 'true' });
        else if (tok.v === 'nil') cmd.push({ k: 'lit', v: null });
        else cmd.push({ k: 'fn', name: tok.v });
      } else {
        throw new Error(`unexpected "${(tok as { v: string }).v}" in {{${src}}}`);
      }
    }
    if (cmd.length > 0) pipe.cmds.push(cmd);
    if (pipe.cmds.length === 0) throw new Error(`empty pipeline in {{${src}}}`);
    return pipe;
  };
  const pipe = parse();
  if (pos !== tokens.length) throw new Error(`unexpected ) in {{${src}}}`);
  return pipe;
}

type Chunk = { text: string } | { action: string; line: number };

function lex(template: string, name: string): Chunk[] {
  const chunks: Chunk[] = [];
  let i = 0;
  let trimNext = false;
  while (i < template.length) {
    const open = template.indexOf('{{', i);
    let text = template.slice(i, open < 0 ? template.length : open);
    if (trimNext) text = text.replace(/^\s+/, '');
    trimNext = false;
    if (open < 0) {
      chunks.push({ text });
      break;
    }
    let j = open + 2;
    const trimPrev = template[j] === '-' && /\s/.test(template[j + 1] ?? '');
    if (trimPrev) {
      text = text.replace(/\s+$/, '');
      j += 1;
    }
    chunks.push({ text });
    // Find the closing braces outside string literals.
    let k = j;
    let quote: string | null = null;
    for (; k < template.length; k++) {
      const c = template[k];
      if (quote) {
        if (c === '\\' && quote === '"') k++;
        else if (c === quote) quote = null;
      } else if (c === '"' || c === '`') quote = c;
      else if (c === '}' && template[k + 1] === '}') break;
    }
    if (k >= template.length) throw new Error(`${name}: unclosed {{ at offset ${open}`);
    let body = template.slice(j, k);
    if (/\s-$/.test(body)) {
      body = body.slice(0, -1);
      trimNext = true;
    }
    const line = template.slice(0, open).split('\n').length;
    const trimmed = body.trim();
    if (!(trimmed.startsWith('/*') && trimmed.endsWith('*/'))) chunks.push({ action: trimmed, line });
    i = k + 2;
  }
  return chunks;
}

interface Parsed {
  nodes: Node[];
  defines: Map<string, Node[]>;
}

function parseTemplate(template: string, name: string): Parsed {
  const chunks = lex(template, name);
  const defines = new Map<string, Node[]>();
  let pos = 0;
  const where = (line: number): string => `${name}:${line}`;
  const parseList = (terminators: string[]): { nodes: Node[]; end: string; endAction: string } => {
    const nodes: Node[] = [];
    while (pos < chunks.length) {
      const ch = chunks[pos++];
      if ('text' in ch) {
        if (ch.text) nodes.push({ n: 'text', v: ch.text });
        continue;
      }
      const a = ch.action;
      const kw = /^([a-z]+)\b/.exec(a)?.[1] ?? '';
      const rest = a.slice(kw.length).trim();
      const pipeOf = (s: string): Pipeline => parsePipeline(lexAction(s), s);
      try {
        if (kw === 'end' || kw === 'else') {
          if (!terminators.includes(kw)) throw new Error(`unexpected {{${a}}}`);
          return { nodes, end: kw, endAction: rest };
        }
        if (kw === 'if') {
          const branches = [{ pipe: pipeOf(rest), body: [] as Node[] }];
          let otherwise: Node[] = [];
          let r = parseList(['else', 'end']);
          branches[0].body = r.nodes;
          while (r.end === 'else') {
            if (r.endAction.startsWith('if ')) {
              const pipe = pipeOf(r.endAction.slice(3));
              r = parseList(['else', 'end']);
              branches.push({ pipe, body: r.nodes });
            } else {
              r = parseList(['end']);
              otherwise = r.nodes;
            }
          }
          nodes.push({ n: 'if', branches, otherwise });
        } else if (kw === 'range' || kw === 'with') {
          const pipe = pipeOf(rest);
          const r = parseList(['else', 'end']);
          const otherwise = r.end === 'else' ? parseList(['end']).nodes : [];
          if (kw === 'range') nodes.push({ n: 'range', pipe, body: r.nodes, otherwise, src: where(ch.line) });
          else nodes.push({ n: 'with', pipe, body: r.nodes, otherwise });
        } else if (kw === 'define') {
          const m = /^"([^"]+)"$/.exec(rest);
          if (!m) throw new Error(`bad define: {{${a}}}`);
          const r = parseList(['end']);
          defines.set(m[1], r.nodes);
        } else if (kw === 'template') {
          const m = /^"([^"]+)"\s*(.*)$/.exec(rest);
          if (!m) throw new Error(`bad template call: {{${a}}}`);
          nodes.push({ n: 'template', name: m[1], pipe: m[2] ? pipeOf(m[2]) : undefined });
        } else if (['block', 'break', 'continue'].includes(kw)) {
          throw new Error(`{{${kw}}} is not supported by the test renderer`);
        } else {
          nodes.push({ n: 'out', pipe: pipeOf(a), src: where(ch.line) });
        }
      } catch (e) {
        const msg = (e as Error).message;
        throw new Error(msg.startsWith(name) ? msg : `${where(ch.line)}: ${msg}`);
      }
    }
    if (terminators.length > 0) throw new Error(`${name}: missing {{end}}`);
    return { nodes, end: '', endAction: '' };
  };
  const { nodes } = parseList([]);
  return { nodes, defines };
}

// ----------------------------------------------------------------------------------------------------------
// Evaluation

class Scope {
  private vars = new Map<string, GoValue>();
  constructor(private parent?: Scope) {}
  declare(name: string, v: GoValue): void {
    this.vars.set(name, v);
  }
  assign(name: string, v: GoValue): void {
    if (this.vars.has(name)) this.vars.set(name, v);
    else if (this.parent) this.parent.assign(name, v);
    else throw new Error(`undefined variable ${name}`);
  }
  get(name: string): GoValue {
    if (this.vars.has(name)) return this.vars.get(name) as GoValue;
    if (this.parent) return this.parent.get(name);
    throw new Error(`undefined variable ${name}`);
  }
}

function walk(base: GoValue, path: string[], where: string, label: string): GoValue {
  let v = base;
  let seen = label;
  for (const key of path) {
    if (!isDict(v)) throw new Error(`${where}: nil pointer evaluating ${seen}.${key} (${seen} is ${kind(v)})`);
    if (!(key in v)) throw new Error(`${where}: map has no entry for key "${key}" at ${seen}.${key}`);
    v = v[key];
    seen = `${seen}.${key}`;
  }
  return v;
}

export class Renderer {
  private defines = new Map<string, Node[]>();

  constructor(files: Map<string, string>) {
    for (const [name, text] of files) {
      const parsed = parseTemplate(text, name);
      for (const [k, v] of parsed.defines) this.defines.set(k, v);
      this.defines.set(name, parsed.nodes);
    }
  }

  render(name: string, data: GoValue): string {
    const nodes = this.defines.get(name);
    if (!nodes) throw new Error(`no template named "${name}"`);
    const root = new Scope();
    root.declare('$', data);
    return this.exec(nodes, data, root);
  }

  private exec(nodes: Node[], dot: GoValue, scope: Scope): string {
    let out = '';
    for (const node of nodes) {
      switch (node.n) {
        case 'text':
          out += node.v;
          break;
        case 'out': {
          const v = this.pipe(node.pipe, dot, scope, node.src);
          if (!node.pipe.decl) out += format(v, node.src);
          break;
        }
        case 'if': {
          let done = false;
          for (const b of node.branches) {
            const inner = new Scope(scope);
            if (truthy(this.pipe(b.pipe, dot, inner, 'if'))) {
              out += this.exec(b.body, dot, inner);
              done = true;
              break;
            }
          }
          if (!done) out += this.exec(node.otherwise, dot, new Scope(scope));
          break;
        }
        case 'with': {
          const inner = new Scope(scope);
          const v = this.pipe(node.pipe, dot, inner, 'with');
          out += truthy(v) ? this.exec(node.body, v, inner) : this.exec(node.otherwise, dot, new Scope(scope));
          break;
        }
        case 'range': {
          const decl = node.pipe.decl;
          const bare: Pipeline = { cmds: node.pipe.cmds };
          const v = this.pipe(bare, dot, scope, node.src);
          const entries: [GoValue, GoValue][] = Array.isArray(v)
            ? v.map((x, i) => [BigInt(i), x])
            : isDict(v)
              ? Object.keys(v)
                  .sort()
                  .map((k) => [k, v[k]])
              : v === null
                ? []
                : (() => {
                    throw new Error(`${node.src}: range over ${kind(v)}`);
                  })();
          if (entries.length === 0) {
            out += this.exec(node.otherwise, dot, new Scope(scope));
            break;
          }
          for (const [k, x] of entries) {
            const inner = new Scope(scope);
            if (decl?.names.length === 1) inner.declare(decl.names[0], x);
            if (decl?.names.length === 2) {
              inner.declare(decl.names[0], k);
              inner.declare(decl.names[1], x);
            }
            out += this.exec(node.body, x, inner);
          }
          break;
        }
        case 'template': {
          const data = node.pipe ? this.pipe(node.pipe, dot, scope, 'template') : null;
          out += this.render(node.name, data);
          break;
        }
      }
    }
    return out;
  }

  private pipe(p: Pipeline, dot: GoValue, scope: Scope, where: string): GoValue {
    let prev: GoValue | undefined;
    for (const cmd of p.cmds) prev = this.command(cmd, dot, scope, where, prev);
    const v = prev as GoValue;
    if (p.decl) {
      if (p.decl.names.length !== 1) throw new Error(`${where}: multiple variables outside range`);
      if (p.decl.assign) scope.assign(p.decl.names[0], v);
      else scope.declare(p.decl.names[0], v);
    }
    return v;
  }

  private operand(o: Operand, dot: GoValue, scope: Scope, where: string): GoValue {
    switch (o.k) {
      case 'lit':
        return o.v;
      case 'field':
        return walk(dot, o.path, where, '');
      case 'var':
        return walk(scope.get(o.name), o.path, where, o.name);
      case 'sub':
        return this.pipe(o.pipe, dot, scope, where);
      case 'fn':
        return this.call(o.name, [], where);
    }
  }

  private command(cmd: Operand[], dot: GoValue, scope: Scope, where: string, piped: GoValue | undefined): GoValue {
    const [head, ...rest] = cmd;
    if (head.k !== 'fn') {
      if (rest.length > 0 || piped !== undefined) throw new Error(`${where}: can't give an argument to a non-function`);
      return this.operand(head, dot, scope, where);
    }
    // and/or evaluate lazily, as Go 1.18+ does.
    if (head.name === 'and' || head.name === 'or') {
      const args = rest.map((o) => () => this.operand(o, dot, scope, where));
      if (piped !== undefined) args.push(() => piped);
      let last: GoValue = null;
      for (const a of args) {
        last = a();
        if (head.name === 'and' ? !truthy(last) : truthy(last)) return last;
      }
      return last;
    }
    const args = rest.map((o) => this.operand(o, dot, scope, where));
    if (piped !== undefined) args.push(piped);
    return this.call(head.name, args, where);
  }

  private call(name: string, a: GoValue[], where: string): GoValue {
    const need = (n: number): void => {
      if (a.length !== n) throw new Error(`${where}: ${name} wants ${n} arguments, got ${a.length}`);
    };
    const str = (v: GoValue): string => format(v, where);
    switch (name) {
      case 'include':
        need(2);
        return this.render(str(a[0]), a[1]);
      case 'toYaml':
        need(1);
        return toYaml(a[0]);
      case 'toJson':
        need(1);
        return JSON.stringify(a[0], (_k, x) => (typeof x === 'bigint' ? Number(x) : x));
      case 'indent':
      case 'nindent': {
        need(2);
        const pad = ' '.repeat(Number(toInt(a[0], where)));
        const body = str(a[1])
          .split('\n')
          .map((l) => pad + l)
          .join('\n');
        return name === 'nindent' ? `\n${body}` : body;
      }
      case 'quote':
        return a.map((v) => goQuote(v === null ? '' : str(v))).join(' ');
      case 'squote':
        return a.map((v) => `'${v === null ? '' : str(v)}'`).join(' ');
      case 'default':
        if (a.length === 1) return a[0];
        need(2);
        return truthy(a[1]) ? a[1] : a[0];
      case 'empty':
        need(1);
        return !truthy(a[0]);
      case 'required':
        need(2);
        if (a[1] === null || a[1] === '') throw new Error(`required: ${str(a[0])}`);
        return a[1];
      case 'fail':
        need(1);
        throw new Error(`fail: ${str(a[0])}`);
      case 'print':
        return a.map(str).join('');
      case 'printf': {
        let i = 1;
        return str(a[0]).replace(/%([%sdvq])/g, (_m, verb: string) => {
          if (verb === '%') return '%';
          const v = a[i++];
          if (v === undefined) throw new Error(`${where}: printf: missing argument`);
          if (verb === 'd') return toInt(v, where).toString();
          if (verb === 'q') return goQuote(str(v));
          return str(v);
        });
      }
      case 'trunc': {
        need(2);
        const n = Number(toInt(a[0], where));
        return str(a[1]).slice(0, n);
      }
      case 'trimSuffix': {
        need(2);
        const s = str(a[1]);
        const suf = str(a[0]);
        return suf && s.endsWith(suf) ? s.slice(0, -suf.length) : s;
      }
      case 'trimPrefix': {
        need(2);
        const s = str(a[1]);
        const pre = str(a[0]);
        return pre && s.startsWith(pre) ? s.slice(pre.length) : s;
      }
      case 'replace':
        need(3);
        return str(a[2]).split(str(a[0])).join(str(a[1]));
      case 'lower':
        need(1);
        return str(a[0]).toLowerCase();
      case 'contains':
        need(2);
        return str(a[1]).includes(str(a[0]));
      case 'hasPrefix':
        need(2);
        return str(a[1]).startsWith(str(a[0]));
      case 'eq':
        if (a.length < 2) throw new Error(`${where}: eq wants 2 or more arguments`);
        return a.slice(1).some((b) => compare(a[0], b, 'eq', where) === 0);
      case 'ne':
        need(2);
        return compare(a[0], a[1], 'ne', where) !== 0;
      case 'lt':
        need(2);
        return compare(a[0], a[1], 'lt', where) < 0;
      case 'le':
        need(2);
        return compare(a[0], a[1], 'le', where) <= 0;
      case 'gt':
        need(2);
        return compare(a[0], a[1], 'gt', where) > 0;
      case 'ge':
        need(2);
        return compare(a[0], a[1], 'ge', where) >= 0;
      case 'not':
        need(1);
        return !truthy(a[0]);
      case 'list':
        return [...a];
      case 'append':
        need(2);
        if (!Array.isArray(a[0])) throw new Error(`${where}: append to a ${kind(a[0])}`);
        return [...a[0], a[1]];
      case 'join':
        need(2);
        if (a[1] === null) return '';
        if (!Array.isArray(a[1])) throw new Error(`${where}: join of a ${kind(a[1])}`);
        return a[1].map(str).join(str(a[0]));
      case 'dict': {
        const d: Dict = {};
        for (let i = 0; i + 1 < a.length; i += 2) d[str(a[i])] = a[i + 1];
        return d;
      }
      case 'has':
        need(2);
        if (a[1] === null) return false;
        if (!Array.isArray(a[1])) throw new Error(`${where}: has in a ${kind(a[1])}`);
        return a[1].some((x) => kind(x) === kind(a[0]) && x === a[0]);
      case 'ternary':
        need(3);
        return truthy(a[2]) ? a[0] : a[1];
      case 'hasKey':
        need(2);
        return isDict(a[0]) && str(a[1]) in a[0];
      case 'index': {
        let v = a[0];
        for (const k of a.slice(1)) {
          if (Array.isArray(v)) v = v[Number(toInt(k, where))] ?? null;
          else if (isDict(v)) v = str(k) in v ? v[str(k)] : null;
          else throw new Error(`${where}: index of a ${kind(v)}`);
        }
        return v;
      }
      case 'int':
      case 'int64':
        need(1);
        return toInt(a[0], where);
      case 'toString':
        need(1);
        return str(a[0]);
      case 'add':
        return a.reduce<bigint>((s, v) => s + toInt(v, where), 0n);
      case 'sub':
        need(2);
        return toInt(a[0], where) - toInt(a[1], where);
      case 'max':
        return a.map((v) => toInt(v, where)).reduce((m, v) => (v > m ? v : m));
      case 'b64enc':
        need(1);
        return Buffer.from(str(a[0]), 'utf8').toString('base64');
      case 'sha256sum':
        need(1);
        return createHash('sha256').update(str(a[0]), 'utf8').digest('hex');
      case 'len':
        need(1);
        if (Array.isArray(a[0])) return BigInt(a[0].length);
        if (isDict(a[0])) return BigInt(Object.keys(a[0]).length);
        return BigInt(str(a[0]).length);
      default:
        throw new Error(`${where}: function "${name}" is not supported by the test renderer`);
    }
  }
}

// ----------------------------------------------------------------------------------------------------------
// The chart

export interface RenderOptions {
  releaseName?: string;
  namespace?: string;
  /** Deep-merged over values.yaml like `helm --values`: maps merge, lists and scalars replace, null deletes. */
  values?: Record<string, unknown>;
}

export interface RenderedChart {
  /** Rendered manifests by template path (templates/x.yaml), empty ones left out. */
  manifests: Map<string, string>;
  notes: string;
  values: Record<string, unknown>;
}

export function deepMerge(base: unknown, over: unknown): unknown {
  if (!isDict(base as GoValue) || !isDict(over as GoValue)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = k in out ? deepMerge(out[k], v) : v;
  }
  return out;
}

export function readYaml(path: string): unknown {
  return YAML.parse(readFileSync(path, 'utf8'), { merge: true });
}

export function templateFiles(chartDir: string): string[] {
  return readdirSync(join(chartDir, 'templates'))
    .filter((f) => /\.(ya?ml|tpl|txt)$/.test(f))
    .sort();
}

export function renderChart(chartDir: string, opts: RenderOptions = {}): RenderedChart {
  const chart = readYaml(join(chartDir, 'Chart.yaml')) as Record<string, string>;
  const values = deepMerge(readYaml(join(chartDir, 'values.yaml')), opts.values ?? {}) as Record<string, unknown>;
  const base = `${chart.name}/templates`;
  const files = new Map<string, string>();
  for (const f of templateFiles(chartDir)) files.set(`${base}/${f}`, readFileSync(join(chartDir, 'templates', f), 'utf8'));
  const renderer = new Renderer(files);
  const top = (name: string): Dict => ({
    Values: values as Dict,
    Release: {
      Name: opts.releaseName ?? 'fgsn',
      Namespace: opts.namespace ?? 'default',
      Service: 'Helm',
      IsInstall: true,
      IsUpgrade: false,
    },
    Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion ?? '' },
    Template: { Name: name, BasePath: base },
  });
  const manifests = new Map<string, string>();
  let notes = '';
  for (const name of files.keys()) {
    const file = name.slice(base.length + 1);
    if (file.startsWith('_')) continue;
    const text = renderer.render(name, top(name));
    if (file === 'NOTES.txt') notes = text;
    else if (text.trim().length > 0) manifests.set(`templates/${file}`, text);
  }
  return { manifests, notes, values };
}

/** Every YAML document of the rendered chart, parsed (empty documents dropped). */
export function manifestObjects(rendered: RenderedChart): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const [file, text] of rendered.manifests) {
    for (const doc of YAML.parseAllDocuments(text)) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}\n${text}`);
      const obj = doc.toJS() as unknown;
      if (obj !== null) out.push(obj as Record<string, unknown>);
    }
  }
  return out;
}
