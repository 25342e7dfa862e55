"""Pure decisions: no asyncio, no SQL, no clock reads."""
