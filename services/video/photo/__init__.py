"""Photo avatars on CPU: a portrait's face landmarks drive a mesh warp of lips, jaw, cheeks and eyelids."""
