"""Argument checks of the Keras model classes: a clear ValueError that names the argument."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
