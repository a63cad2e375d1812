"""Optional Jupyter server setting: kernel websockets without Nagle's algorithm.

jupyter_server (2.x, through tornado) leaves Nagle's algorithm on for the kernel websocket. When
the server writes two frames in a row (a widget message and the kernel's ``status: idle``, say),
the second waits for the browser's delayed ACK: on Linux ~40 ms. Measured here with the widget's
ping (``benchmarks/bench_widget.py``): kernel -> browser 45 ms median as shipped, 10 ms with
``TCP_NODELAY``. Every kernel -> browser message pays it (every widget, every output), so a
slice switch costs at least that much.

Use it by configuring the server (it changes nothing else)::

    jupyter lab --ServerApp.kernel_websocket_connection_class=al_annotator.jupyter.server.NoDelayKernelWebsocketConnection

or in ``jupyter_server_config.json``::

    {"ServerApp": {"kernel_websocket_connection_class":
                   "al_annotator.jupyter.server.NoDelayKernelWebsocketConnection"}}
"""

from __future__ import annotations

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

__all__ = ["NoDelayKernelWebsocketConnection", "CONFIG_FLAG"]

#: The command-line flag that selects this connection class.
CONFIG_FLAG = (
    "--ServerApp.kernel_websocket_connection_class="
    "al_annotator.jupyter.server.NoDelayKernelWebsocketConnection"
)


class NoDelayKernelWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket connection with ``TCP_NODELAY`` set when it opens."""

    def connect(self):  # type: ignore[override]
        self.websocket_handler.set_nodelay(True)
        return super().connect()
