import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateClientKeys, loadClientKeys, newKeyPair, type ClientKeys } from '../../src/upstream/clientKeys.js';
import { startCredgate } from '../fixtures/credgate.js';
import { decisionMatrix } from '../fixtures/decisionMatrix.js';
import { startOidcProvider } from '../fixtures/oidcProvider.js';

const AUDIENCE = 'https://git.example.com';
const OTHER_AUDIENCE = 'https://mail.example.com';
const PASSWORD_CLIENT = { clientId: 'credgate-password-client', clientSecret: 'password-client-secret-value' };
const INTROSPECTION_CLIENT_ID = 'credgate-introspection-client';

const alice = { username: 'alice', email: 'alice@example.com', password: 'alice-oidc-password', sub: 'user|alice', scopes: ['read:repo', 'write:repo'] };
const carol = { username: 'carol', password: 'carol-oidc-password', sub: 'user|carol', scopes: ['read:repo'] };
const unicode = { username: 'jürgen', password: 'pä:ss%wörd:✓ 名', sub: 'user|juergen', scopes: ['read:repo'] };

/**
 * The same rules against oidc-provider, an independent certified implementation: endpoints found
 * by discovery (it lists introspection, unlike Auth0), a standard 400 invalid_grant, JWT access
 * tokens, and introspection authenticated by private_key_jwt using credgate's own JWKS — with an
 * ES256 client key (signed on the event loop) and with an RS256 one (what Auth0 takes; signed on
 * the thread pool, ahead of need, so that most introspections send a pre-signed assertion, each
 * with its own jti: oidc-provider refuses a replayed one).
 */
for (const [label, clientKeys] of [
  ['oidc-provider', () => generateClientKeys()],
  ['oidc-provider, RS256 client assertions', async () => {
    const pem = (await newKeyPair('rsa')).privatePem;
    const file = join(mkdtempSync(join(tmpdir(), 'credgate-rsa-')), 'client.pem');
    writeFileSync(file, pem, { mode: 0o600 });
    return loadClientKeys(file);
  }],
] as const satisfies readonly (readonly [string, () => Promise<ClientKeys>])[]) {
  decisionMatrix(label, async () => {
    let jwksUrl = '';
    const op = await startOidcProvider({
      audience: AUDIENCE,
      extraAudiences: [OTHER_AUDIENCE],
      passwordClient: PASSWORD_CLIENT,
      introspectionClientId: INTROSPECTION_CLIENT_ID,
      introspectionClientJwksUrl: () => jwksUrl,
      users: [alice, carol, unicode],
    });
    const credgate = await startCredgate({
      issuer: op.issuer,
      audience: AUDIENCE,
      clientId: PASSWORD_CLIENT.clientId,
      clientSecret: PASSWORD_CLIENT.clientSecret,
      tokenAuthMethod: 'client_secret_basic',
      introspectionClientId: INTROSPECTION_CLIENT_ID,
    }, { keys: await clientKeys() });
    jwksUrl = credgate.jwksUrl;
      return {
      credgate,
      audience: AUDIENCE,
      otherAudience: OTHER_AUDIENCE,
      alice,
      carol,
      unicode,
      appPasswordCredential: 'access_token',
      mintAppPassword: (username, o) => op.mintAppPassword(username, o),
      revoke: (token) => op.revoke(token),
      mintRefreshToken: (username) => op.mintRefreshToken(username),
      accessToken: (user) => op.accessToken(user),
      async close() {
        await credgate.close();
        await op.close();
      },
    };
  });
}
