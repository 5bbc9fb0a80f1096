// A real OpenID provider for latchkey's tests: the `oidc-provider` package (a certified
// implementation) on 127.0.0.1, with one confidential client, its development sign-in form
// (any login, any password: the login is the account id) and consent granted without asking.
//
// Environment: PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS (comma-separated), KEY_ID (the
// signing key's id; a new one on each start, so a restart is a key rotation), ACCOUNTS (JSON:
// login -> {email, email_verified, name}; a login not listed is `<login>@example.test`,
// verified).
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const accounts = JSON.parse(process.env.ACCOUNTS || '{}');
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const key = { ...privateKey.export({ format: 'jwk' }), kid: process.env.KEY_ID || 'k1', use: 'sig', alg: 'RS256' };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: process.env.REDIRECT_URIS.split(','),
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  jwks: { keys: [key] },
  cookies: { keys: ['latchkey-test-provider'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // The ID token carries the scopes' claims (as Google's does); latchkey reads only it.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const known = accounts[id] ?? { email: `${id}@example.test`, email_verified: true, name: id };
    return { accountId: id, async claims() { return { sub: id, ...known }; } };
  },
  // First-party client: consent is given without a screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${port}`);
});
