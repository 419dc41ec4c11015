"""Weight-sharing elastic supernet over the ``macro`` space (not built yet; see docs)."""
