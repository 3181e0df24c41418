from dalle_data.cli import main

main()
