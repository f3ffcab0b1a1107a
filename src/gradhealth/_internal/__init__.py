"""Private helpers shared by every room of the package: validation, atomic io, environment
quieting, seeding and layer walking. Nothing here is public API."""
