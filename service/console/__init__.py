"""The client commands of ``taskstream``: ``emit``, ``tail``, ``export`` and ``demo``.

Each is a thin layer over ``service.client``, which does every request, retry and stream;
``service.cli`` parses their options and imports a module only when its command runs.
"""
