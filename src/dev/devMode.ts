import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../devserver/index.js';
import type { Logger } from '../log.js';
import { closeOnSignals, reloadOnHangup, startServer, type RunningServer } from '../main.js';
import { generateClientKeys } from '../upstream/clientKeys.js';

export const DEV_AUDIENCE = 'https://api.credgate.dev';
export const DEV_CLIENT_ID = 'credgate-dev';

export interface DevMode {
  readonly devServer: DevAuthorizationServer;
  readonly server: RunningServer;
  /** The seeded app-specific password of the MFA user. */
  readonly bobAppPassword: string;
  close(): Promise<void>;
}

/**
 * Dev mode: the embedded development authorization server (Auth0's wire format) on a loopback
 * port chosen at run time, credgate in front of it with an in-memory client-assertion key that the
 * dev AS fetches from credgate's own /.well-known/jwks.json, exactly as Auth0 would.
 */
export async function startDevMode(base: Config, log: Logger): Promise<DevMode> {
  const clientSecret = randomBytes(24).toString('base64url');
  const devServer = await startDevServer({
    audience: base.audience ?? DEV_AUDIENCE,
    users: defaultDevUsers(),
    clients: [{ clientId: DEV_CLIENT_ID, clientSecret }],
  });
  const keys = await generateClientKeys();
  const config = {
    ...base,
    issuer: devServer.issuer,
    audience: base.audience ?? DEV_AUDIENCE,
    clientId: DEV_CLIENT_ID,
    clientSecret,
    introspectionKeyFile: undefined,
    // Dev mode listens on loopback: a proxy tried out beside it (nginx, Caddy) is on loopback too.
    trustedProxies: base.trustedProxies.length > 0 ? base.trustedProxies : ['loopback'],
  };
  let server: RunningServer;
  try {
    server = await startServer(config, log, { keys, defaultHost: '127.0.0.1' });
  } catch (err) {
    await devServer.close();
    throw err;
  }
  devServer.setResourceServerJwksUrl(`${server.url}/.well-known/jwks.json`);
  const bobAppPassword = devServer.createAppPassword('bob', { scope: 'read:repo read:mail' }).password;
  return {
    devServer,
    server,
    bobAppPassword,
    async close() {
      await server.close();
      await devServer.close();
    },
  };
}

export function devBanner(dev: DevMode): string {
  const url = dev.server.url;
  const line = '='.repeat(78);
  return [
    line,
    '  credgate DEV MODE: embedded development authorization server, demo users,',
    '  in-memory keys. NOT FOR PRODUCTION. Set CREDGATE_ISSUER to use a real one.',
    line,
    `  credgate:                 ${url}`,
    `  dev authorization server: ${dev.devServer.issuer}`,
    '',
    '  A password (alice, read:repo write:repo read:mail send:mail):',
    `    curl -i -u 'alice:correct horse battery staple' '${url}/auth?scope=read:repo'`,
    '  An app-specific password (bob is enrolled in MFA, so his password alone is refused):',
    `    curl -i -u 'bob:${dev.bobAppPassword}' '${url}/auth?scope=read:repo'`,
    '  The JSON API:',
    `    curl -s ${url}/v1/verify -H 'content-type: application/json' \\`,
    `      -d '{"username":"alice","password":"correct horse battery staple","scopes":["read:repo"]}'`,
    '  A new app-specific password for alice:',
    `    curl -s -X POST ${dev.devServer.url}/dev/users/alice/app-passwords -H 'content-type: application/json' -d '{}'`,
    line,
  ].join('\n');
}

/** Loopback addresses dev mode may listen on. */
const LOOPBACK_HOSTS = /^(127(\.\d{1,3}){3}|::1|\[::1\]|localhost)$/i;

/**
 * Why dev mode must not start here, or undefined. Its demo users have published passwords, so it
 * refuses anything that looks like production: `NODE_ENV=production`, an issuer configured (the
 * operator meant `serve`), or a listen address other than loopback.
 */
export function devModeRefusal(config: Config, env: NodeJS.ProcessEnv): string | undefined {
  if (env.NODE_ENV === 'production') return 'dev mode refuses to start with NODE_ENV=production: its demo users have published passwords. Run `credgate serve` with CREDGATE_ISSUER set.';
  if (config.issuer !== undefined) return 'dev mode embeds its own authorization server, but issuer (CREDGATE_ISSUER) is set: run `credgate serve` to use it.';
  if (config.host !== undefined && !LOOPBACK_HOSTS.test(config.host)) return `dev mode listens on loopback only, but HOST is ${config.host}: unset HOST or use 127.0.0.1.`;
  return undefined;
}

export async function runDevMode(base: Config, log: Logger): Promise<void> {
  const dev = await startDevMode(base, log);
  process.stdout.write(devBanner(dev) + '\n');
  closeOnSignals(dev, log, base);
  reloadOnHangup(dev.server.service);
}
