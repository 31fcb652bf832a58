module github.com/keel-commerce/keel/tools

go 1.26.8
