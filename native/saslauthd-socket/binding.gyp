{
  "targets": [
    {
      "target_name": "saslauthd_socket",
      "sources": ["socket.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
