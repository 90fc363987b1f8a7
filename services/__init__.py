"""InfiniteTalk Live backend services: one sub-package per process, plus `common` shared by all."""
