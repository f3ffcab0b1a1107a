"""Device maths with ``keras.ops``, shared by the monitor, clipping and the checkup."""

__all__: list[str] = []
