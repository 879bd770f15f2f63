from diffkit.cli import main

main()
