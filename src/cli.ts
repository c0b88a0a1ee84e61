#!/usr/bin/env node
import { existsSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { loadConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { CredgateError } from './errors.js';
import { decisionJson } from './http/render.js';
import { createLogger } from './log.js';
import { closeOnSignals, reloadOnHangup, startServer } from './main.js';
import { createService, requireServiceConfig, VERSION } from './service.js';
import { newKeyPair } from './upstream/clientKeys.js';
import { checkPair, checkUsername } from './http/credentials.js';
import { parseTarget } from './policy/target.js';
import type { PolicyVerdict } from './policy/policy.js';
import { PROTOCOLS, type Protocol } from './policy/schema.js';
import { loadPolicyFile } from './policy/store.js';

const HELP = `credgate ${VERSION}: verifies usernames and passwords against an OAuth 2.0 authorization server

Usage:
  credgate [serve] [--config FILE]     run the service against the authorization server named by
                                       issuer (CREDGATE_ISSUER); without one it exits 2
  credgate dev [--config FILE]         DEV MODE, only on request: an embedded development
                                       authorization server with demo users, on loopback only;
                                       refused with NODE_ENV=production
  credgate keygen [--use client|identity] [--type rsa|ec|ed25519] [--out FILE]
                                       write a new private key (mode 0600) and print its public key
                                       (PEM and JWK): --use client (default, RSA) signs introspection
                                       client assertions, to register at the AS; --use identity
                                       (default Ed25519) signs identity tokens (identityKeyFile)
  credgate introspect TOKEN|-          introspect a token as credgate would (signed client assertion);
                                       '-' reads it from standard input
  credgate verify USERNAME [--scope S]...
                                       read a password (no echo) and print credgate's decision
  credgate purge USERNAME [--url URL]  purge USERNAME's account in the running credgate: cached
                                       decisions of every alias, and its login-protection ledger
                                       (admin API: URL or CREDGATE_ADMIN_URL, token CREDGATE_ADMIN_TOKEN)
  credgate policy check FILE           validate a policy file (exit 0 valid, 2 invalid)
  credgate policy explain [--file FILE] [--protocol http|imap|pop3|smtp]
                   [--method M] [--uri URI] [--host H]
                                       print the rule that decides this request and what it needs
                                       (FILE default: policyFile / CREDGATE_POLICY_FILE; exit 0 if
                                       a credential can be allowed, 1 if the policy denies)
  credgate --help | --version

Configuration: --config FILE or CREDGATE_CONFIG (YAML), every key also an environment variable
(CREDGATE_ISSUER, CREDGATE_AUDIENCE, ...; see README). Exit codes: 0 ok/allow, 1 deny, 2 error.`;

function configFrom(values: { config?: string }): Config {
  return loadConfig({ file: values.config });
}

async function readSecret(prompt: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true });
  if (process.stdin.isTTY) {
    // Mute the echo: write the prompt once, swallow what readline would print of the input.
    const rlAny = rl as unknown as { _writeToOutput: (s: string) => void };
    process.stderr.write(prompt);
    rlAny._writeToOutput = () => {};
  }
  const line = await new Promise<string>((resolve) => rl.once('line', resolve).once('close', () => resolve('')));
  rl.close();
  if (process.stdin.isTTY) process.stderr.write('\n');
  return line;
}

/** `POST /admin/purge` at a running credgate. Errors name the URL and status, never the token. */
async function purgeRemote(base: string, username: string, adminToken: string): Promise<number> {
  let url: URL;
  try {
    url = new URL('admin/purge', base.endsWith('/') ? base : base + '/');
  } catch {
    throw new CredgateError(`admin URL ${base} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CredgateError(`admin URL ${base} is not http(s)`);
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ username }),
      redirect: 'error', // a redirect would carry the token somewhere else
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : err instanceof Error ? err.message : String(err);
    throw new CredgateError(`cannot reach credgate's admin API at ${url.origin}: ${cause}`);
  }
  const body = (await response.json().catch(() => ({}))) as { purged?: unknown; message?: unknown };
  if (response.status === 200 && typeof body.purged === 'number') return body.purged;
  if (response.status === 401) throw new CredgateError(`${url.origin} refused the admin token (401): is CREDGATE_ADMIN_TOKEN the running credgate's?`);
  if (response.status === 404) throw new CredgateError(`no admin API at ${url.origin} (404): the server needs adminToken, and with adminPort set the admin API is only on that port`);
  throw new CredgateError(`admin API at ${url.origin} answered ${response.status}${typeof body.message === 'string' ? `: ${body.message}` : ''}`);
}

function policyCommand(args: string[], values: { config?: string; file?: string; method?: string; uri?: string; host?: string; protocol?: string }): number {
  const [sub, fileArg] = args;
  if (sub === 'check') {
    if (!fileArg) throw new CredgateError('usage: credgate policy check FILE');
    const { policy } = loadPolicyFile(fileArg);
    const audiences = [...policy.audiences];
    const name = (d: typeof policy.document.default) => (typeof d === 'string' ? d : 'require');
    process.stdout.write(`${fileArg}: valid, ${policy.ruleCount} rule(s), default ${name(policy.document.default)} (HTTP), mailDefault ${name(policy.document.mailDefault)}` + (audiences.length ? `, audiences ${audiences.join(', ')}` : '') + '\n');
    for (const warning of policy.warnings()) process.stderr.write(`warning: ${warning}\n`);
    return 0;
  }
  if (sub !== 'explain') throw new CredgateError('usage: credgate policy check FILE | credgate policy explain [--file FILE] [--protocol P] [--method M] [--uri URI] [--host H]');
  const file = values.file ?? fileArg ?? configFrom(values).policyFile;
  if (!file) throw new CredgateError('no policy file: pass --file FILE or set policyFile (CREDGATE_POLICY_FILE)');
  const protocol = (values.protocol ?? 'http').toLowerCase();
  if (!(PROTOCOLS as readonly string[]).includes(protocol)) throw new CredgateError(`--protocol must be one of ${PROTOCOLS.join(', ')}`);
  const { policy } = loadPolicyFile(file);
  // The same target parsing as every interface (policy/target.ts): an ambiguous URI is denied here too.
  const parsed = values.uri === undefined ? undefined : parseTarget(values.uri);
  const verdict: PolicyVerdict =
    parsed !== undefined && !parsed.ok
      ? { effect: 'deny', rule: undefined, why: `ambiguous request target: ${parsed.why}` }
      : policy.evaluate({ protocol: protocol as Protocol, method: values.method, host: values.host, target: parsed?.target });
  const lines = [
    `request:   ${protocol}${values.method ? ' ' + values.method.toUpperCase() : ''}${values.host ? ' host ' + values.host : ''}${values.uri ? ' ' + values.uri : ''}`,
    ...(parsed?.ok ? [`path:      ${parsed.target.path} (decoded)`] : []),
  ];
  if (verdict.effect === 'deny') {
    lines.push(`rule:      ${verdict.rule ?? '(none)'}`, `effect:    deny (${verdict.why})`);
  } else {
    const index = policy.document.rules.findIndex((r) => r.name === verdict.rule);
    lines.push(
      `rule:      ${verdict.rule}${index >= 0 ? ` (rule ${index + 1} of ${policy.ruleCount})` : ' (no rule matched)'}`,
      'effect:    allow a valid credential that has',
      `audience:  ${verdict.audience ?? '(the configured audience, CREDGATE_AUDIENCE)'}`,
      `scopes:    ${verdict.scopes.length ? verdict.scopes.join(' ') : '(none required)'}`,
      `strategy:  ${verdict.scopeStrategy}`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
  return verdict.effect === 'deny' ? 1 : 0;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
      type: { type: 'string' },
      use: { type: 'string' },
      out: { type: 'string' },
      scope: { type: 'string', multiple: true },
      url: { type: 'string' },
      file: { type: 'string' },
      method: { type: 'string' },
      uri: { type: 'string' },
      host: { type: 'string' },
      protocol: { type: 'string' },
    },
  });
  if (values.help) return process.stdout.write(HELP + '\n'), 0;
  if (values.version) return process.stdout.write(VERSION + '\n'), 0;
  const [command = 'serve', ...rest] = positionals;

  switch (command) {
    case 'dev': {
      const config = configFrom(values);
      const { runDevMode, devModeRefusal } = await import('./dev/devMode.js');
      const refusal = devModeRefusal(config, process.env);
      if (refusal) throw new CredgateError(refusal);
      await runDevMode(config, createLogger({ level: config.logLevel, pretty: process.stdout.isTTY }));
      return -1;
    }
    case 'serve': {
      const config = configFrom(values);
      // Never a fallback to dev mode: a production start with a lost variable must not open the door.
      if (config.issuer === undefined) {
        throw new CredgateError('CREDGATE_ISSUER (issuer) is not set: credgate serve needs an authorization server. For the embedded demo authorization server, run `credgate dev` (or `npm start` without CREDGATE_ISSUER).');
      }
      const log = createLogger({ level: config.logLevel });
      const server = await startServer(requireServiceConfig(config), log);
      log.info({ url: server.url, issuer: config.issuer, audience: config.audience }, 'credgate listening');
      closeOnSignals(server, log, config);
      reloadOnHangup(server.service);
      return -1; // keep running
    }
    case 'keygen': {
      const use = values.use ?? 'client';
      if (use !== 'client' && use !== 'identity') throw new CredgateError('--use must be client or identity');
      const type = (values.type ?? (use === 'identity' ? 'ed25519' : 'rsa')) as 'rsa' | 'ec' | 'ed25519';
      if (!['rsa', 'ec', 'ed25519'].includes(type)) throw new CredgateError('--type must be rsa, ec or ed25519');
      const pair = await newKeyPair(type);
      const variable = use === 'identity' ? 'CREDGATE_IDENTITY_KEY_FILE' : 'CREDGATE_INTROSPECTION_KEY_FILE';
      if (values.out) {
        if (existsSync(values.out)) throw new CredgateError(`${values.out} exists; refusing to overwrite a key`);
        writeFileSync(values.out, pair.privatePem, { mode: 0o600 });
        process.stderr.write(`private key written to ${values.out} (set ${variable}=${values.out})\n`);
      } else {
        process.stdout.write(pair.privatePem);
      }
      process.stdout.write(
        use === 'identity'
          ? `\n# public key (PEM); credgate publishes it at /.well-known/jwks.json for downstream services:\n${pair.publicPem}`
          : `\n# public key (PEM), for Auth0's verificationKey / client credentials:\n${pair.publicPem}`,
      );
      process.stdout.write(`\n# public key (JWK, alg ${pair.alg}, kid = RFC 7638 thumbprint):\n${JSON.stringify(pair.jwk, null, 2)}\n`);
      return 0;
    }
    case 'introspect': {
      const token = rest[0] === '-' || rest[0] === undefined ? (await readSecret('token: ')).trim() : rest[0];
      if (!token) throw new CredgateError('no token given');
      const config = requireServiceConfig(configFrom(values));
      const service = await createService(config, createLogger({ level: 'warn' }));
      try {
        const answer = await service.introspection.introspect(token);
        process.stdout.write(JSON.stringify({ client_id: config.introspectionClientId ?? config.audience, kid: service.keys?.signing.kid, answer }, null, 2) + '\n');
        return answer.active === true ? 0 : 1;
      } finally {
        await service.close();
      }
    }
    case 'verify': {
      const username = rest[0];
      if (!username) throw new CredgateError('usage: credgate verify USERNAME');
      const password = await readSecret(`password for ${username}: `);
      const problem = checkPair(username, password);
      if (problem) throw new CredgateError(problem.message);
      const config = requireServiceConfig(configFrom(values));
      const service = await createService(config, createLogger({ level: 'warn' }));
      try {
        const decision = await service.pipeline.decide({
          interface: 'cli',
          protocol: 'http',
          credentials: { kind: 'basic', username, password },
          pinnedScopes: values.scope ?? [],
          peer: { address: '127.0.0.1', trusted: false },
          peerIsEndUser: false,
        });
        process.stdout.write(JSON.stringify(decisionJson(decision), null, 2) + '\n');
        return decision.allow ? 0 : decision.status === 503 ? 2 : 1;
      } finally {
        await service.close();
      }
    }
    case 'purge': {
      const username = rest[0];
      if (!username) throw new CredgateError('usage: credgate purge USERNAME [--url URL]');
      const problem = checkUsername(username);
      if (problem) throw new CredgateError(problem);
      const config = configFrom(values);
      if (config.adminToken === undefined) throw new CredgateError('no admin token: set adminToken (CREDGATE_ADMIN_TOKEN) as the running credgate has it');
      const base = values.url ?? process.env.CREDGATE_ADMIN_URL ?? `http://127.0.0.1:${config.adminPort ?? config.port ?? 8080}`;
      const purged = await purgeRemote(base, username, config.adminToken);
      process.stdout.write(`purged ${purged} cached decision(s) for ${username}\n`);
      return 0;
    }
    case 'policy':
      return policyCommand(rest, values);
    default:
      process.stderr.write(`unknown command ${command}\n\n${HELP}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    const message = err instanceof CredgateError ? err.message : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    process.stderr.write(`credgate: ${message}\n`);
    process.exitCode = 2;
  },
);
