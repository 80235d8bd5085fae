{
  "targets": [
    {
      "target_name": "saslauthd_socket",
      "sources": ["socket.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"]
    },
    {
      "target_name": "cache_digest",
      "sources": ["digest.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden", "-Wno-deprecated-declarations"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
