"""The leaderboard's HTML pages: `/` (the boards) and `/board/{session_id}` (one session)."""
