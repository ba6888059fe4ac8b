"""DashScope (Alibaba Cloud Model Studio) providers for xiaozhi-core."""

__version__ = "0.1.0"
