// HMAC-SHA256 for authd's credential cache, with OpenSSL's SHA-256 as linked into Node (its headers ship with Node).
// Why in C: node:crypto's createHmac() costs ~4 µs per call (a context fetched and allocated each time), about a seventh
// of a whole cached authentication; here the key's inner and outer states are computed once, and a digest is two
// SHA-256 finishes (~0.5 µs). Same function as createHmac('sha256', key): test/unit/auth/cache-digest.test.ts compares them.
// Trusts its caller (src/auth/daemon/cache.ts): the key is 32 random bytes, messages are strings.
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  SHA256_CTX inner;
  SHA256_CTX outer;
} hmac_key_t;

static void key_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  OPENSSL_cleanse(data, sizeof(hmac_key_t));
  free(data);
}

/* createKey(key: Buffer (1-64 bytes)) -> an opaque object holding the HMAC's inner and outer starting states. */
static napi_value js_create_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], obj;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *key;
  size_t len;
  if (argc != 1 || napi_get_buffer_info(env, argv[0], &key, &len) != napi_ok || len == 0 || len > SHA256_CBLOCK) {
    napi_throw_type_error(env, NULL, "createKey(key: Buffer of 1 to 64 bytes)");
    return NULL;
  }
  hmac_key_t *k = malloc(sizeof *k);
  if (!k) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  unsigned char ipad[SHA256_CBLOCK], opad[SHA256_CBLOCK];
  memset(ipad, 0x36, sizeof ipad);
  memset(opad, 0x5c, sizeof opad);
  for (size_t i = 0; i < len; i++) {
    ipad[i] ^= ((unsigned char *)key)[i];
    opad[i] ^= ((unsigned char *)key)[i];
  }
  SHA256_Init(&k->inner);
  SHA256_Update(&k->inner, ipad, sizeof ipad);
  SHA256_Init(&k->outer);
  SHA256_Update(&k->outer, opad, sizeof opad);
  OPENSSL_cleanse(ipad, sizeof ipad);
  OPENSSL_cleanse(opad, sizeof opad);
  napi_create_object(env, &obj);
  if (napi_wrap(env, obj, k, key_finalize, NULL, NULL) != napi_ok) {
    free(k);
    napi_throw_error(env, NULL, "cannot wrap the key");
    return NULL;
  }
  return obj;
}

/* HMAC of the UTF-8 bytes of argv[1] under the key argv[0]; 0 on success, else an exception is pending. */
static int hmac_of(napi_env env, napi_value key_obj, napi_value message, unsigned char out[SHA256_DIGEST_LENGTH]) {
  hmac_key_t *k = NULL;
  if (napi_unwrap(env, key_obj, (void **)&k) != napi_ok || !k) {
    napi_throw_type_error(env, NULL, "not a cache digest key");
    return -1;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, message, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "message: a string");
    return -1;
  }
  char stack[2048];
  char *bytes = len < sizeof stack ? stack : malloc(len + 1);
  if (!bytes) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return -1;
  }
  napi_get_value_string_utf8(env, message, bytes, len + 1, &len);
  SHA256_CTX c = k->inner;
  unsigned char inner[SHA256_DIGEST_LENGTH];
  SHA256_Update(&c, bytes, len);
  SHA256_Final(inner, &c);
  c = k->outer;
  SHA256_Update(&c, inner, sizeof inner);
  SHA256_Final(out, &c);
  OPENSSL_cleanse(bytes, len);
  OPENSSL_cleanse(&c, sizeof c);
  if (bytes != stack) free(bytes);
  return 0;
}

/* digest(key, message: string) -> Buffer: HMAC-SHA256(key, UTF-8 of message). */
static napi_value js_digest(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  unsigned char mac[SHA256_DIGEST_LENGTH];
  if (argc != 2 || hmac_of(env, argv[0], argv[1], mac) != 0) return NULL;
  napi_create_buffer_copy(env, sizeof mac, mac, NULL, &out);
  return out;
}

/* matches(key, message: string, expected: Buffer) -> boolean, compared in constant time. */
static napi_value js_matches(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *expected;
  size_t elen;
  if (argc != 3 || napi_get_buffer_info(env, argv[2], &expected, &elen) != napi_ok) {
    napi_throw_type_error(env, NULL, "matches(key, message: string, expected: Buffer)");
    return NULL;
  }
  unsigned char mac[SHA256_DIGEST_LENGTH];
  if (hmac_of(env, argv[0], argv[1], mac) != 0) return NULL;
  int same = elen == sizeof mac && CRYPTO_memcmp(mac, expected, sizeof mac) == 0;
  napi_get_boolean(env, same, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"createKey", NULL, js_create_key, NULL, NULL, NULL, napi_default, NULL},
      {"digest", NULL, js_digest, NULL, NULL, NULL, napi_default, NULL},
      {"matches", NULL, js_matches, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
