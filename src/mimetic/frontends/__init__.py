"""Front ends over the Python API: the CLI (``cli``, rendered by ``render``), the desk (``app``, its
long stages run by ``jobs``), the OpenAI-compatible server (``serve``) and the MCP server."""
