import openai

# 配置客户端
openai.api_base = "http://localhost:3000/v1"
openai.api_key = "your-api-key"

# 发送请求
response = openai.ChatCompletion.create(
    model="claude-3-sonnet-20240229",
    messages=[
        {"role": "user", "content": "Hello!"}
    ],
    headers={
        "X-Model-Provider": "kiro-api"
    }
)

print(response.choices[0].message.content)
