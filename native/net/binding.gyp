{
  "targets": [
    {
      "target_name": "reuseport_socket",
      "sources": ["reuseport.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
